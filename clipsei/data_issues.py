"""Issues beyond the label column, as extra columns of a scan's issues table.

Duplicates and leakage (:mod:`clipsei.engine.duplicates`), outliers
(:mod:`clipsei.engine.outliers`) and image-property issues (:mod:`clipsei.images.properties`)
from what a scan already has: its neighbour lists, the content hashes and statistics taken
while decoding. Every issue type is a boolean ``is_<type>`` column; :data:`ISSUE_TYPES`
lists them in the order the report and ``summary.json`` show them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .engine.duplicates import NEAR_DUPLICATE_SIMILARITY, find_duplicates
from .engine.outliers import find_outliers
from .images.properties import ISSUE_COLUMNS, PROPERTY_NAMES, find_property_issues

ISSUE_TYPES = ("label_issue", "duplicate", "exact_duplicate", "near_duplicate", "leakage",
               "outlier", *(column[3:] for column in ISSUE_COLUMNS))


def find_data_issues(neighbor_ids, neighbor_sims, *, embeddings=None, content_hashes=None,
                     splits=None, properties=None, features=None, labels=None,
                     min_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> pd.DataFrame:
    """One row per sample: duplicate, leakage, outlier and (with ``properties``, a DataFrame
    of :data:`~clipsei.images.properties.PROPERTY_NAMES`) image-property columns.

    A scan passes the detector's ``issue_neighbor_ids_``/``issue_neighbor_sims_`` (those of
    :func:`clipsei.engine.duplicates.search_duplicate_neighbors`; for the default method,
    its own lists) and no ``embeddings``: near-duplicates are then judged by the cosine in
    that standardised space, whatever the method; ``embeddings`` re-measures candidate pairs
    on its unit rows instead.

    Columns: ``is_duplicate``, ``duplicate_group`` (-1 none), ``is_exact_duplicate``,
    ``is_near_duplicate``, ``is_leakage``, ``outlier_score`` (lower = more unusual),
    ``is_outlier``, then the property flags and values when given.
    """
    duplicates = find_duplicates(neighbor_ids, neighbor_sims, content_hashes=content_hashes,
                                 embeddings=embeddings, splits=splits,
                                 min_similarity=min_similarity).as_frame()
    outliers = find_outliers(neighbor_ids, neighbor_sims, embeddings=features,
                             labels=labels).as_frame()
    columns = [duplicates[["is_duplicate", "duplicate_group", "is_exact_duplicate",
                           "is_near_duplicate", "is_leakage"]],
               outliers[["outlier_score", "is_outlier"]]]
    if properties is not None:
        properties = properties.reset_index(drop=True)
        if len(properties) != len(duplicates):
            raise ValueError(f"properties must have {len(duplicates)} rows; got {len(properties)}")
        columns += [find_property_issues(properties), properties[list(PROPERTY_NAMES)]]
    return pd.concat(columns, axis=1)


def add_data_issues(issues: pd.DataFrame, extra: pd.DataFrame, *, splits=None) -> pd.DataFrame:
    """``issues`` with the columns of ``extra`` (and ``split``, after ``group``) added;
    attrs kept. Input tables are not changed."""
    table = pd.concat([issues.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    if splits is not None:
        at = table.columns.get_loc("group") + 1 if "group" in table else (
            1 if "path" in table else 0)
        table.insert(at, "split", np.asarray(splits, dtype=object))
    table.attrs = dict(issues.attrs)
    return table


def count_data_issues(issues: pd.DataFrame) -> dict:
    """{issue type: number of samples} for each ``is_<type>`` column of ``issues``, plus
    ``n_duplicate_groups``."""
    counts = {name: int(issues[f"is_{name}"].astype(bool).sum())
              for name in ISSUE_TYPES if f"is_{name}" in issues}
    if "duplicate_group" in issues:
        counts["n_duplicate_groups"] = int(issues["duplicate_group"][
            issues["duplicate_group"] >= 0].nunique())
    return counts


def find_clean_rows(issues: pd.DataFrame) -> np.ndarray:
    """(N,) bool: rows a clean manifest keeps. Drops every row flagged as an outlier or for
    an image property, and from each duplicate set keeps only its first such row (none of a
    set whose members disagree on the label). Label issues are left to
    :func:`clipsei.relabel`, which fixes or drops them."""
    flag_columns = [f"is_{name}" for name in ISSUE_TYPES if f"is_{name}" in issues
                    and "duplicate" not in name and name not in ("leakage", "label_issue")]
    keep = ~issues[flag_columns].astype(bool).any(axis=1).to_numpy()
    if "duplicate_group" not in issues:
        return keep
    group = issues["duplicate_group"].to_numpy()
    in_set = group >= 0
    labels_per_set = issues.loc[in_set].groupby(group[in_set])["given_label"].nunique()
    conflicting = np.isin(group, labels_per_set.index[labels_per_set > 1]) & in_set
    first = pd.Series(np.arange(len(issues)))[in_set & keep].groupby(group[in_set & keep]).min()
    redundant = in_set & ~np.isin(np.arange(len(issues)), first.to_numpy())
    return keep & ~redundant & ~conflicting
