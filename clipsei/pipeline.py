"""The front door: images -> embeddings -> SEI detector -> a ``ScanResult`` to read and act on.

``scan`` chains :mod:`clipsei.data`, :mod:`clipsei.embed`, :mod:`clipsei.prompts` and
:class:`clipsei.LabelIssueDetector`; ``scan_embeddings`` starts from embeddings you already
have. Outputs follow cleanlab's conventions where a cleanlab user would look: a boolean
``is_label_issue`` mask and a ``label_score`` quality score in [0, 1], lower = worse.
"""

from __future__ import annotations

import datetime
import logging
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__

logger = logging.getLogger(__name__)

_ARRAYS = ("entropy_history", "agreement_history", "neighbor_ids", "neighbor_sims")
_ATTRS = ("cutoff", "class_cutoffs", "estimated_error_rate", "flagged_share_per_class", "method",
          "warnings", "class_signal")


@dataclass
class ScanResult:
    """What a scan found, one row per scored image (images that failed to decode excluded).

    issues: the table of :func:`clipsei.find_label_issues` plus ``path`` (when the images are
        files), ``given_class``/``suggested_class`` (names) and ``group`` (when given).
    entropy_history: (E, N) float16 entropy per epoch; agreement_history: (E, N) bool.
    neighbor_ids / neighbor_sims: (N, k) nearest neighbours (row ids, -1 = none) and cosines.
    failures: DataFrame(path, reason) of images that could not be read.
    summary: counts, cutoff, per-class error estimates, confusion, settings, versions, timings.
    images: in-memory pixels for thumbnails when the source was an array (not saved).
    """

    issues: pd.DataFrame
    entropy_history: np.ndarray
    agreement_history: np.ndarray
    neighbor_ids: np.ndarray
    neighbor_sims: np.ndarray
    class_names: list
    failures: pd.DataFrame
    summary: dict
    images: object = field(default=None, repr=False)

    def plot_trajectories(self, ids, *, ax=None):
        """Entropy per epoch of the rows ``ids`` (matplotlib Figure, not shown)."""
        from .plots import plot_trajectories

        return plot_trajectories(self.entropy_history, ids,
                                 agreement_history=self.agreement_history,
                                 labels=self.issues["given_label"].to_numpy(),
                                 class_names=self.class_names, ax=ax)

    def plot_sei_histogram(self, *, ax=None):
        """Histogram of ``label_score`` with the automatic cutoff (matplotlib Figure)."""
        from .plots import plot_score_histogram

        return plot_score_histogram(self.issues["label_score"].to_numpy(),
                                    cutoff=self.issues.attrs.get("cutoff"),
                                    is_label_issue=self.issues["is_label_issue"].to_numpy(), ax=ax)

    def plot_class_error_rates(self, *, ax=None):
        """Estimated label-error rate per class (matplotlib Figure)."""
        from .plots import plot_class_error_rates

        counts = np.bincount(self.issues["given_label"], minlength=len(self.class_names))
        return plot_class_error_rates(self.issues.attrs["flagged_share_per_class"],
                                      class_names=self.class_names, counts=counts, ax=ax)

    def to_html(self, path, **options) -> Path:
        """Write the self-contained HTML report (see :func:`clipsei.report.render_report`)."""
        from .report import save_report

        options.setdefault("title", "clipsei: suspected label errors")
        return save_report(path, self.issues, class_names=self.class_names,
                           entropy_history=self.entropy_history,
                           agreement_history=self.agreement_history,
                           neighbor_ids=self.neighbor_ids, neighbor_sims=self.neighbor_sims,
                           images=self.images, summary=self.summary, **options)

    def save(self, directory) -> Path:
        """Write issues.csv (+ .parquet with pyarrow), summary.json, failures.csv, the arrays
        as .npy and report.html into ``directory``; return it."""
        import json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.issues.to_csv(directory / "issues.csv", index=False)
        try:
            self.issues.to_parquet(directory / "issues.parquet", index=False)
        except ImportError:
            logger.info("pyarrow not installed; issues.parquet not written")
        self.failures.to_csv(directory / "failures.csv", index=False)
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name), allow_pickle=False)
        (directory / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n",
                                                encoding="utf-8")
        self.to_html(directory / "report.html")
        logger.info("saved scan to %s", directory)
        return directory

    @classmethod
    def load(cls, directory) -> ScanResult:
        """Read a scan written by :meth:`save`."""
        import json

        directory = Path(directory)
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"no saved scan in {directory} (summary.json not found)")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        issues = _read_issues(directory)
        issues.attrs.update({key: summary[key] for key in _ATTRS if key in summary})
        arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
        failures = pd.read_csv(directory / "failures.csv", dtype={"path": str})
        return cls(issues=issues, class_names=list(summary["class_names"]), failures=failures,
                   summary=summary, **arrays)


def _read_issues(directory: Path) -> pd.DataFrame:
    if (directory / "issues.parquet").is_file():
        try:
            return pd.read_parquet(directory / "issues.parquet")
        except ImportError:
            logger.info("pyarrow not installed; reading issues.csv")
    return pd.read_csv(directory / "issues.csv", dtype={"path": str})


def scan(source, *, labels=None, model="ViT-B-32", pretrained="laion2b_s34b_b79k",
         prompts="generic", cache_dir=None, out=None, device="auto", random_state=0,
         batch_size=64, progress=True, **detector_options) -> ScanResult:
    """Find suspected label errors in a folder, manifest, list of paths or image array.

    source, labels: as :func:`clipsei.load_image_table` (a folder per class, or a manifest
        ``path,label[,group]``). model, pretrained: any open_clip model and weights
        (``hf-hub:...`` too), or ``model`` a loaded :class:`clipsei.embed.ClipModel`.
    prompts: the prompt set whose class prompts start the head.
    cache_dir: embedding cache (re-runs skip unchanged images). out: when given, the
        result is also saved there (:meth:`ScanResult.save`).
    detector_options: passed to :class:`clipsei.LabelIssueDetector` (``method``, ``n_epochs``...);
        its ``device`` defaults to the CLIP model's.
    """
    from .data import load_image_table
    from .embed import ClipModel, embed_images, load_clip_model
    from .prompts import encode_class_prompts, encode_other_prompt

    timings: dict = {}
    with _timed(timings, "load_images"):
        table = load_image_table(source, labels=labels)
    with _timed(timings, "load_model"):
        clip = model if isinstance(model, ClipModel) else load_clip_model(
            model, pretrained, device=device)
    with _timed(timings, "embed"):
        embedded = embed_images(table, clip, cache_dir=cache_dir, batch_size=batch_size,
                                progress=progress)
    if embedded.indices.size == 0:
        raise ValueError(f"none of the {len(table)} images in {source} could be read; "
                         f"first failure: {embedded.failures['reason'].iloc[0]}")
    with _timed(timings, "encode_prompts"):
        class_embeddings = encode_class_prompts(table.class_names, clip, prompt_set=prompts,
                                                cache_dir=cache_dir)
        other_embedding = encode_other_prompt(clip, prompt_set=prompts, cache_dir=cache_dir)
    rows = embedded.indices
    detector_options.setdefault("device", str(clip.device))  # heads train where CLIP ran
    settings = {"source": str(source), "model": clip.name, "pretrained": clip.pretrained,
                "prompts": prompts, "device": str(clip.device), "weights_id": clip.weights_id}
    return _scan_arrays(
        embedded.embeddings, embedded.labels, class_names=table.class_names,
        paths=None if table.paths is None else [table.paths[i] for i in rows],
        groups=None if table.groups is None else np.asarray(table.groups)[rows],
        images=None if table.images is None else _Rows(table.images, rows),
        class_embeddings=class_embeddings, other_embedding=other_embedding,
        failures=embedded.failures[["path", "reason"]], n_images=len(table), settings=settings,
        timings=timings, out=out, random_state=random_state, **detector_options)


def scan_embeddings(embeddings, labels, *, paths=None, class_names=None, class_embeddings=None,
                    other_embedding=None, groups=None, images=None, out=None, random_state=0,
                    **detector_options) -> ScanResult:
    """Like :func:`scan`, from precomputed embeddings (N, D) and labels (N,) ints in [0, K).

    paths (N file paths) give the report its thumbnails, or ``images`` (N uint8 arrays or
    PIL images). Any feature works: CLIP image embeddings, another network's features,
    even raw pixels.
    """
    return _scan_arrays(embeddings, labels, paths=paths, class_names=class_names,
                        class_embeddings=class_embeddings, other_embedding=other_embedding,
                        groups=groups, images=images, out=out, random_state=random_state,
                        failures=pd.DataFrame(columns=["path", "reason"]), n_images=None,
                        settings={"source": "embeddings"}, timings={}, **detector_options)


def _scan_arrays(embeddings, labels, *, paths, class_names, class_embeddings, other_embedding,
                 groups, images, out, random_state, failures, n_images, settings, timings,
                 **detector_options) -> ScanResult:
    from .engine.detect import LabelIssueDetector

    labels = np.asarray(labels)
    if paths is not None and len(paths) != len(labels):
        raise ValueError(f"paths must have one entry per label ({len(labels)}); got {len(paths)}")
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max()) + 1 if labels.size else 0)]
    with _timed(timings, "detect"):
        detector = LabelIssueDetector(random_state=random_state, **detector_options).fit(
            embeddings, labels, class_embeddings=class_embeddings,
            other_embedding=other_embedding, groups=groups)
    issues = _named_issues(detector.issues_, class_names, paths, groups)
    result = ScanResult(
        issues=issues, entropy_history=detector.entropy_history_,
        agreement_history=detector.agreement_history_, neighbor_ids=detector.neighbor_ids_,
        neighbor_sims=detector.neighbor_sims_, class_names=[str(c) for c in class_names],
        failures=failures.reset_index(drop=True), images=images, summary={})
    result.summary = _summary(result, detector, n_images=n_images or len(issues),
                              settings={**settings, "random_state": random_state}, timings=timings)
    if out is not None:
        with _timed(timings, "save"):
            result.save(out)
    return result


def relabel(scan_dir, *, accept_above: float, drop_flagged: bool = False,
            out=None) -> pd.DataFrame:
    """Write a corrected manifest from a saved scan and return it.

    A flagged image whose suggested label differs from its given one takes the suggestion
    when ``suggested_confidence >= accept_above``; with ``drop_flagged`` the other flagged
    images are left out. The manifest (default ``scan_dir/corrected_manifest.csv``) has
    ``path,label[,group]`` and, for review, ``given_label`` and ``action`` (kept, relabelled,
    or flagged_kept); ``clipsei scan`` reads it back as it is.
    """
    if not 0.0 <= float(accept_above) <= 1.0:
        raise ValueError(f"accept_above must be in [0, 1]; got {accept_above}")
    scan_dir = Path(scan_dir)
    if not (scan_dir / "issues.csv").is_file():
        raise FileNotFoundError(f"no saved scan in {scan_dir} (issues.csv not found)")
    issues = _read_issues(scan_dir)
    if "path" not in issues:
        raise ValueError(f"scan {scan_dir} has no image paths (it was made from embeddings); "
                         "relabel writes a manifest of image files")
    flagged = issues["is_label_issue"].astype(bool).to_numpy()
    moved = flagged & (issues["suggested_label"] != issues["given_label"]).to_numpy()
    accept = moved & (issues["suggested_confidence"].to_numpy() >= float(accept_above))
    action = np.where(accept, "relabelled", np.where(flagged, "flagged_kept", "kept"))
    manifest = pd.DataFrame({"path": issues["path"],
                             "label": np.where(accept, issues["suggested_class"],
                                               issues["given_class"]),
                             "given_label": issues["given_class"], "action": action})
    if "group" in issues:
        manifest.insert(2, "group", issues["group"])
    if drop_flagged:
        manifest = manifest[action != "flagged_kept"].reset_index(drop=True)
    out = Path(out) if out is not None else scan_dir / "corrected_manifest.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out, index=False)
    logger.info("relabelled %d, dropped %d; manifest %s", int(accept.sum()),
                len(issues) - len(manifest), out)
    manifest.attrs["path"] = str(out)
    return manifest


def _named_issues(issues: pd.DataFrame, class_names, paths, groups) -> pd.DataFrame:
    names = np.asarray([str(c) for c in class_names], dtype=object)
    table = issues.copy()
    table.insert(table.columns.get_loc("given_label") + 1, "given_class",
                 names[table["given_label"].to_numpy()])
    table.insert(table.columns.get_loc("suggested_label") + 1, "suggested_class",
                 names[table["suggested_label"].to_numpy()])
    if groups is not None:
        table.insert(0, "group", np.asarray(groups))
    if paths is not None:
        table.insert(0, "path", [str(p) for p in paths])
    table.attrs = dict(issues.attrs)
    return table


def _summary(result: ScanResult, detector, *, n_images, settings, timings) -> dict:
    issues, names = result.issues, result.class_names
    given = issues["given_label"].to_numpy()
    flagged = issues["is_label_issue"].to_numpy(bool)
    counts = np.bincount(given, minlength=len(names))
    n_flagged = np.bincount(given[flagged], minlength=len(names))
    rates = [float(r) if np.isfinite(r) else None for r in detector.flagged_share_per_class_]
    class_cutoffs = issues.attrs.get("class_cutoffs") or [None] * len(names)
    confusion = pd.crosstab(issues["given_label"], issues["suggested_label"]).reindex(
        index=range(len(names)), columns=range(len(names)), fill_value=0)
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_images": int(n_images), "n_scored": len(issues), "n_failed": len(result.failures),
        "n_flagged": int(flagged.sum()), "flagged_fraction": float(flagged.mean()),
        "n_conflicting_duplicates": len(detector.duplicate_pairs_),
        "method": issues.attrs.get("method"), "cutoff": issues.attrs.get("cutoff"),
        "class_cutoffs": issues.attrs.get("class_cutoffs"),
        "estimated_error_rate": float(issues.attrs["estimated_error_rate"]),
        "flagged_share_per_class": rates, "class_names": names,
        "warnings": list(issues.attrs.get("warnings", [])),
        "class_signal": issues.attrs.get("class_signal"),
        "per_class": [{"class": name, "n_images": int(counts[k]), "n_flagged": int(n_flagged[k]),
                       "flagged_share": rates[k], "cutoff": class_cutoffs[k]}
                      for k, name in enumerate(names)],
        "confusion": {"rows": "given", "columns": "suggested", "classes": names,
                      "counts": confusion.to_numpy().tolist()},
        "failures": result.failures.to_dict(orient="records"),
        "settings": {**settings, "detector": _jsonable(issues.attrs.get("settings", {}))},
        "versions": _versions(), "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def _jsonable(value):
    """Settings as plain JSON types (numpy scalars and arrays included; others as text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _versions() -> dict:
    versions = {"clipsei": __version__, "python": platform.python_version()}
    for package in ("numpy", "pandas", "torch", "open_clip_torch", "faiss-cpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start
        logger.info("%s took %.2f s", stage, timings[stage])


class _Rows:
    """``images[rows[i]]`` as item ``i``, without copying the pixels."""

    def __init__(self, images, rows: np.ndarray):
        self.images, self.rows = images, rows

    def __getitem__(self, i: int):
        return self.images[int(self.rows[i])]

    def __len__(self) -> int:
        return len(self.rows)
