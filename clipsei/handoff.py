"""Hand a scan to the tools people already use: cleanlab's tables and a FiftyOne dataset.

:func:`to_cleanlab` renames a scan's columns to cleanlab Datalab's (``is_label_issue``,
``label_score``, ``given_label``, ``predicted_label``, ``is_outlier_issue``, ...), so the
table is a cleanlab ``label_issues`` and ``pred_probs`` its ``pred_probs``.
:func:`to_fiftyone` builds a FiftyOne dataset (the optional ``fiftyone`` extra) to browse
the scan in the FiftyOne App.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data_issues import ISSUE_TYPES

# clipsei column -> cleanlab Datalab column, for the issue types both know
_DATALAB_FLAGS = {"outlier": "outlier", "near_duplicate": "near_duplicate", "dark": "dark",
                  "bright": "light", "low_information": "low_information", "blurry": "blurry",
                  "odd_size": "odd_size", "odd_aspect": "odd_aspect_ratio",
                  "grayscale": "grayscale"}


def to_cleanlab(issues: pd.DataFrame) -> pd.DataFrame:
    """A scan's issues table with cleanlab Datalab's column names, one row per sample.

    ``is_label_issue``, ``label_score`` (also as ``label_quality``, CleanLearning's name),
    ``given_label``, ``predicted_label`` (the class of ``pred_probs``, as cleanlab's is: our
    ``suggested_label``), then ``is_<type>_issue`` for the other issue types
    (``is_near_duplicate_issue`` covers exact and near copies, ``near_duplicate_sets`` lists
    each row's other members) and ``outlier_score``.
    """
    missing = [c for c in ("is_label_issue", "label_score", "given_label", "suggested_label")
               if c not in issues]
    if missing:
        raise ValueError(f"issues is missing columns {missing}; is it a scan's issues table?")
    table = pd.DataFrame({
        "is_label_issue": issues["is_label_issue"].astype(bool).to_numpy(),
        "label_score": issues["label_score"].to_numpy(np.float64),
        "given_label": issues["given_label"].to_numpy(np.int64),
        "predicted_label": issues["suggested_label"].to_numpy(np.int64),
    })
    table["label_quality"] = table["label_score"]
    for ours, theirs in _DATALAB_FLAGS.items():
        column = "is_duplicate" if ours == "near_duplicate" else f"is_{ours}"
        if column in issues:
            table[f"is_{theirs}_issue"] = issues[column].astype(bool).to_numpy()
    if "outlier_score" in issues:
        table["outlier_score"] = issues["outlier_score"].to_numpy(np.float64)
    if "duplicate_group" in issues:
        table["near_duplicate_sets"] = _set_members(issues["duplicate_group"].to_numpy())
    return table


def _set_members(group: np.ndarray) -> list:
    """Per row, the other rows of its duplicate set (an empty list for none)."""
    members: dict = {}
    for row, key in enumerate(group.tolist()):
        if key >= 0:
            members.setdefault(key, []).append(row)
    return [[r for r in members[key] if r != row] if key >= 0 else []
            for row, key in enumerate(group.tolist())]


def _fiftyone():
    try:
        import fiftyone
    except ImportError as err:
        raise ImportError("exporting to FiftyOne needs the fiftyone package: "
                          "pip install 'clipsei[fiftyone]'") from err
    return fiftyone


def to_fiftyone(issues: pd.DataFrame, *, name=None, overwrite: bool = False,
                persistent: bool = False):
    """A FiftyOne dataset of a scan's images (rows with a ``path``), returned unsaved to disk
    unless ``persistent``.

    Fields: ``given_label`` / ``suggested_label`` (``fo.Classification``; the suggestion with
    its confidence), ``label_score`` and every other numeric or flag column of ``issues``
    (``is_duplicate``, ``duplicate_group``, ``outlier_score``, ``is_dark``...); the tags name
    each sample's issue types (``label_issue``, ``duplicate``...). An existing dataset
    ``name`` raises ``ValueError`` unless ``overwrite``.
    """
    _check_paths(issues)
    fo = _fiftyone()
    if name is not None and fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"FiftyOne dataset {name!r} exists; pass overwrite=True to replace")
        fo.delete_dataset(name)
    samples = to_fiftyone_samples(issues)
    dataset = fo.Dataset(name)
    dataset.persistent = bool(persistent)
    dataset.add_samples(samples)
    return dataset


def to_fiftyone_samples(issues: pd.DataFrame) -> list:
    """One ``fo.Sample`` per row of a scan's issues table, with the fields and tags
    :func:`to_fiftyone` describes (no database is needed until they are added to a dataset)."""
    _check_paths(issues)
    fo = _fiftyone()
    fields = [c for c in issues.columns if c not in _NOT_FIELDS
              and (issues[c].dtype.kind in "biuf" or c in ("split", "group"))]
    flags = [n for n in ISSUE_TYPES if f"is_{n}" in issues]
    samples = []
    for values in issues.to_dict(orient="records"):
        sample = fo.Sample(filepath=str(values["path"]),
                           tags=[n for n in flags if bool(values[f"is_{n}"])])
        sample["given_label"] = fo.Classification(label=str(values["given_class"]))
        sample["suggested_label"] = fo.Classification(
            label=str(values["suggested_class"]), confidence=float(values["suggested_confidence"]))
        for field in fields:
            sample[field] = _plain(values[field])
        samples.append(sample)
    return samples


def _check_paths(issues: pd.DataFrame) -> None:
    if "path" not in issues:
        raise ValueError("issues has no path column (the scan was made from embeddings); "
                         "a FiftyOne dataset needs image files")


_NOT_FIELDS = {"path", "given_label", "suggested_label", "given_class", "suggested_class"}


def _plain(value):
    """numpy scalars -> Python ones (NaN -> None), as FiftyOne stores them."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
