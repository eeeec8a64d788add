"""The front door: images -> embeddings -> SEI detector -> a ``ScanResult`` to read and act on.

``scan`` chains :mod:`clipsei.images.data`, :mod:`clipsei.images.embed`,
:mod:`clipsei.images.prompts` and
:class:`clipsei.LabelIssueDetector`; ``scan_embeddings`` starts from embeddings you already
have. Outputs follow cleanlab's conventions where a cleanlab user would look: a boolean
``is_label_issue`` mask and a ``label_score`` quality score in [0, 1], lower = worse.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._front import RANDOM_WEIGHTS_WARNING as RANDOM_WEIGHTS_WARNING
from ._front import check_outputs, is_random_weights, read_issues
from ._front import load_images as load_images
from ._front import load_model as load_model
from ._paths import check_output_dir, mark_output_dir, mark_output_for_cache
from .embed_folder import embed_to_folder as embed_to_folder
from .relabeling import RELABEL_HEADER as RELABEL_HEADER
from .relabeling import relabel as relabel
from .report.summary import build_summary

logger = logging.getLogger(__name__)

_ARRAYS = ("entropy_history", "agreement_history", "neighbor_ids", "neighbor_sims")
_ATTRS = ("calibrated_error_rate", "expected_errors_flagged", "expected_errors_unflagged",
          "cutoff", "class_cutoffs", "estimated_error_rate", "flagged_share_per_class",
          "estimated_errors_per_class", "method", "warnings", "class_signal", "zero_shot_prior",
          "verified")


@dataclass
class ScanResult:
    """What a scan found, one row per scored image (images that failed to decode excluded).

    issues: the table of :func:`clipsei.find_label_issues` plus ``path`` (when the images are
        files), ``given_class``/``suggested_class`` (names), ``group`` and ``split`` (when
        given) and the data-issue columns of :func:`clipsei.data_issues.find_data_issues`.
    entropy_history: (E, N) float16 entropy per epoch; agreement_history: (E, N) bool.
    neighbor_ids / neighbor_sims: (N, k) nearest neighbours (row ids, -1 = none) and cosines.
    failures: DataFrame(path, reason) of images that could not be read.
    summary: counts, cutoff, per-class error estimates, confusion, settings, versions, timings.
    images: in-memory pixels for thumbnails when the source was an array (not saved).
    pred_probs: (N, K) float32 class probabilities behind ``suggested_label`` (cleanlab's
        ``pred_probs``); None for a scan saved before they were kept.
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
    pred_probs: np.ndarray | None = field(default=None, repr=False)

    def to_cleanlab(self) -> pd.DataFrame:
        """The issues table in cleanlab Datalab's column names
        (:func:`clipsei.handoff.to_cleanlab`);
        with :attr:`pred_probs` it is what cleanlab takes as ``label_issues``/``pred_probs``."""
        from .handoff import to_cleanlab

        return to_cleanlab(self.issues)

    def to_fiftyone(self, name=None, *, overwrite: bool = False, persistent: bool = False):
        """A FiftyOne dataset of the scanned images with labels, scores and issue fields
        (:func:`clipsei.handoff.to_fiftyone`; needs ``pip install 'clipsei[fiftyone]'``)."""
        from .handoff import to_fiftyone

        return to_fiftyone(self.issues, name=name, overwrite=overwrite, persistent=persistent)

    def write_audit_sheet(self, out, n: int = 160, *, random_state=0) -> Path:
        """Write ``n`` images to verify (:func:`clipsei.engine.audit.rank_audit_sample`) as
        ``out/audit.csv``, or ``audit-1.csv``, ... where that exists: a sheet may hold a
        reviewer's work and is never replaced. Returns the path; filled in, it goes back to
        a scan as ``trusted`` (``--trusted``)."""
        from .engine.audit import rank_audit_sample

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer (all {len(self.issues)} images are "
                             f"listed where it is larger); got {n!r}")
        if Path(out).suffix.lower() == ".csv" and not Path(out).is_dir():
            raise ValueError(f"out is the folder the sheet goes into (as out/audit.csv); got a "
                             f"file name {out}: pass its folder")
        sheet = rank_audit_sample(self.issues, min(int(n), len(self.issues)),
                                  random_state=random_state)
        Path(out).mkdir(parents=True, exist_ok=True)
        for number in range(10_000):
            path = Path(out) / (f"audit-{number}.csv" if number else "audit.csv")
            try:
                with open(path, "x", newline="", encoding="utf-8") as handle:  # never replaces
                    sheet.to_csv(handle, index=False)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"{out}: audit.csv and audit-1.csv .. audit-9999.csv all exist")

    def plot_trajectories(self, ids, *, ax=None):
        """Entropy per epoch of the rows ``ids`` (matplotlib Figure, not shown)."""
        from .report.plots import plot_trajectories

        return plot_trajectories(self.entropy_history, ids,
                                 agreement_history=self.agreement_history,
                                 labels=self.issues["given_label"].to_numpy(),
                                 class_names=self.class_names, ax=ax)

    def plot_label_score_histogram(self, *, ax=None):
        """Histogram of ``label_score`` with the automatic cutoff (matplotlib Figure)."""
        from .report.plots import plot_score_histogram

        return plot_score_histogram(self.issues["label_score"].to_numpy(),
                                    cutoff=self.issues.attrs.get("cutoff"),
                                    is_label_issue=self.issues["is_label_issue"].to_numpy(), ax=ax)

    def plot_sei_histogram(self, *, ax=None):
        """Deprecated name of :meth:`plot_label_score_histogram` (it plots ``label_score``)."""
        warnings.warn("plot_sei_histogram is deprecated; use plot_label_score_histogram",
                      DeprecationWarning, stacklevel=2)
        return self.plot_label_score_histogram(ax=ax)

    def plot_class_error_rates(self, *, ax=None):
        """Estimated label-error rate per class: confident learning's count of wrong labels
        over the class's images (matplotlib Figure)."""
        from .report.plots import plot_class_error_rates

        counts = np.bincount(self.issues["given_label"], minlength=len(self.class_names))
        errors = np.asarray([0 if e is None else e
                             for e in self.issues.attrs["estimated_errors_per_class"]])
        return plot_class_error_rates(errors / np.maximum(counts, 1),
                                      class_names=self.class_names, counts=counts, ax=ax)

    def to_html(self, path, **options) -> Path:
        """Write the self-contained HTML report (see :func:`clipsei.report.render_report`)."""
        from .report.html import save_report

        options.setdefault("title", "clipsei: suspected label errors")
        return save_report(path, self.issues, class_names=self.class_names,
                           entropy_history=self.entropy_history,
                           agreement_history=self.agreement_history,
                           neighbor_ids=self.neighbor_ids, neighbor_sims=self.neighbor_sims,
                           images=self.images, summary=self.summary, **options)

    def save(self, directory) -> Path:
        """Write issues.csv (+ .parquet with pyarrow), summary.json, failures.csv, the arrays
        as .npy and report.html into ``directory``; return it."""
        directory = mark_output_dir(check_output_dir(directory, option="directory"), kind="scan")
        self.issues.to_csv(directory / "issues.csv", index=False)
        try:
            self.issues.to_parquet(directory / "issues.parquet", index=False)
        except ImportError:
            logger.info("pyarrow not installed; issues.parquet not written")
        self.failures.to_csv(directory / "failures.csv", index=False)
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name), allow_pickle=False)
        if self.pred_probs is not None:
            np.save(directory / "pred_probs.npy", self.pred_probs, allow_pickle=False)
        (directory / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n",
                                                encoding="utf-8")
        self.to_html(directory / "report.html")
        logger.info("saved scan to %s", directory)
        return directory

    @classmethod
    def load(cls, directory) -> ScanResult:
        """Read a scan written by :meth:`save`."""
        directory = Path(directory)
        summary_path = directory / "summary.json"
        if not summary_path.is_file():
            raise FileNotFoundError(f"no saved scan in {directory} (summary.json not found)")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        issues = read_issues(directory)
        issues.attrs.update({key: summary[key] for key in _ATTRS if key in summary})
        arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
        failures = pd.read_csv(directory / "failures.csv", dtype={"path": str})
        probs = directory / "pred_probs.npy"
        return cls(issues=issues, class_names=list(summary["class_names"]), failures=failures,
                   summary=summary, **arrays,
                   pred_probs=np.load(probs, allow_pickle=False) if probs.is_file() else None)


def scan(source, *, labels=None, manifest=None, model="ViT-B-32",
         pretrained="laion2b_s34b_b79k", prompts="generic", cache_dir=None, out=None,
         device="auto", random_state=0, batch_size=64, progress=True, intensity="none",
         trusted=None, engine="local", ray_address=None, decode="cpu",
         **detector_options) -> ScanResult:
    """Find suspected label errors in a folder, manifest, list of paths or image array.

    source: as :func:`clipsei.load_image_table` (a folder per class, a manifest
        ``path,label[,group]``, a list of paths or a uint8 array). labels: (N,) labels of a
        list or array. manifest: a manifest whose paths are relative to the folder ``source``.
    model, pretrained: any open_clip model and weights (``hf-hub:...`` too), or ``model`` a
        loaded :class:`clipsei.images.embed.ClipModel`.
    prompts: the prompt set whose class prompts start the head.
    intensity: "none", or "window" to stretch each image's grey levels before embedding
        (:func:`clipsei.images.embed.embed_images`; for dark medical images with few grey levels).
    decode: "cpu" (default), "device" or "auto": where JPEGs are decoded and resized
        (:func:`clipsei.images.embed.embed_images`; "auto" is the model's device on CUDA).
    cache_dir: embedding cache (re-runs skip unchanged images). out: when given, the
        result is also saved there (:meth:`ScanResult.save`); both are checked before any work.
    trusted: (N,) bool mask or indices of the source's images whose labels a person verified
        (never flagged), or a mapping ``{row: verified label}``.
    engine, ray_address: "ray" embeds on a Ray cluster (the one at ``ray_address``) and fills
        the same cache (:func:`clipsei.images.embed.embed_images`); scoring runs here.
    detector_options: passed to :class:`clipsei.LabelIssueDetector` (``method``, ``n_epochs``,
        ``target_precision``, ``max_flags``...); its ``device`` defaults to the CLIP model's.
    """
    from .engine.flag_choice import select_trusted
    from .images.embed import ClipModel, embed_images
    from .images.prompts import encode_class_prompts, encode_other_prompt
    from .images.rescan import weights_loaded

    check_outputs(out, cache_dir)
    if isinstance(labels, (str, os.PathLike)):
        warnings.warn("scan(labels=<manifest path>) is deprecated; use manifest=",
                      DeprecationWarning, stacklevel=2)
        manifest, labels = labels, None
    timings: dict = {}
    with _timed(timings, "load_images"):
        table = load_images(source, labels=labels, manifest=manifest)
    trusted = select_trusted(trusted, len(table))
    with _timed(timings, "load_model"):
        needs_weights = detector_options.get("method") == "sei_prompt"  # runs the text tower
        clip = model if isinstance(model, ClipModel) else (
            (None if needs_weights else _model_from_cache(
                model, pretrained, cache_dir, table, prompts, intensity, device, decode))
            or load_model(model, pretrained, device=device))
    mark_output_for_cache(out, cache_dir, kind="scan")
    with _timed(timings, "embed"):
        embedded = embed_images(table, clip, cache_dir=cache_dir, batch_size=batch_size,
                                progress=progress, intensity=intensity, engine=engine,
                                ray_address=ray_address, decode=decode)
    _check_enough_read(embedded, table, source)
    with _timed(timings, "encode_prompts"):
        class_embeddings = encode_class_prompts(table.class_names, clip, prompt_set=prompts,
                                                cache_dir=cache_dir)
        other_embedding = encode_other_prompt(clip, prompt_set=prompts, cache_dir=cache_dir)
    rows = embedded.indices
    detector_options.setdefault("device", str(clip.device))  # heads train where CLIP ran
    settings = {"source": str(source), "model": clip.name, "pretrained": clip.pretrained,
                "prompts": prompts, "device": str(clip.device), "weights_id": clip.weights_id,
                "intensity": intensity, "model_loaded": weights_loaded(clip), "decode": decode}
    return _scan_arrays(
        embedded.embeddings, embedded.labels, class_names=table.class_names,
        paths=None if table.paths is None else [table.paths[i] for i in rows],
        groups=None if table.groups is None else np.asarray(table.groups)[rows],
        images=None if table.images is None else _Rows(table.images, rows),
        class_embeddings=class_embeddings, other_embedding=other_embedding,
        failures=embedded.failures[["path", "reason"]], n_images=len(table), settings=settings,
        timings=timings, out=out, random_state=random_state,
        trusted=select_trusted(trusted, len(table), rows), progress=progress,
        splits=None if table.splits is None else np.asarray(table.splits)[rows],
        content_hashes=embedded.content_hashes, properties=embedded.properties,
        notes=[RANDOM_WEIGHTS_WARNING] if is_random_weights(clip) else [], text_model=clip,
        prompt_set=prompts, **detector_options)


def _check_enough_read(embedded, table, source) -> None:
    """One line naming an unreadable file when the readable images leave under 2 classes."""
    if embedded.failures.empty:
        return
    first = embedded.failures.iloc[0]
    example = f"e.g. {first['path']}: {first['reason']}"
    if embedded.indices.size == 0:
        raise ValueError(f"none of the {len(table)} images in {source} could be read ({example})")
    present = np.unique(embedded.labels)
    if present.size < 2:
        raise ValueError(f"{len(embedded.failures)} of the {len(table)} images in {source} could "
                         f"not be read ({example}); the readable ones are all of class "
                         f"{table.class_names[present[0]]!r}, and a scan needs 2 classes")


def _model_from_cache(name, pretrained, cache_dir, table, prompts, intensity, device,
                      decode="cpu"):
    """A weightless stand-in when ``cache_dir`` holds every embedding the scan needs, else
    None (see :func:`clipsei.images.rescan.find_cached_model`)."""
    from .images.rescan import find_cached_model

    return find_cached_model(name, pretrained, cache_dir=cache_dir, table=table,
                             class_names=table.class_names, prompt_set=prompts,
                             intensity=intensity, device=device, decode=decode)


def scan_embeddings(embeddings, labels, *, paths=None, class_names=None, class_embeddings=None,
                    other_embedding=None, groups=None, images=None, out=None, random_state=0,
                    splits=None, content_hashes=None, trusted=None,
                    **detector_options) -> ScanResult:
    """Like :func:`scan`, from precomputed embeddings (N, D) and labels (N,) ints in [0, K).

    paths (N file paths) give the report its thumbnails, or ``images`` (N uint8 arrays or
    PIL images). Any feature works: CLIP image embeddings, another network's features,
    even raw pixels. splits (N,) names each row's split (duplicates across splits are
    leakage); content_hashes (N,) strings mark exact duplicates.
    """
    check_outputs(out, None)
    return _scan_arrays(embeddings, labels, paths=paths, class_names=class_names,
                        class_embeddings=class_embeddings, other_embedding=other_embedding,
                        groups=groups, images=images, out=out, random_state=random_state,
                        failures=pd.DataFrame(columns=["path", "reason"]), n_images=None,
                        settings={"source": "embeddings"}, timings={}, notes=[],
                        splits=splits, content_hashes=content_hashes, trusted=trusted,
                        **detector_options)


def _scan_arrays(embeddings, labels, *, paths, class_names, class_embeddings, other_embedding,
                 groups, images, out, random_state, failures, n_images, settings, timings,
                 notes, splits=None, content_hashes=None, properties=None, text_model=None,
                 prompt_set="generic", trusted=None, progress=False,
                 **detector_options) -> ScanResult:
    from .data_issues import add_data_issues, count_data_issues, find_data_issues
    from ._progress import progress_bars
    from .engine.detect import LabelIssueDetector

    labels = np.asarray(labels)
    if paths is not None and len(paths) != len(labels):
        raise ValueError(f"paths must have one entry per label ({len(labels)}); got {len(paths)}")
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max()) + 1 if labels.size else 0)]
    elif labels.dtype.kind in "iuf" and labels.size and labels.max() >= len(class_names):
        raise ValueError(f"class_names must name every label: labels go up to "
                         f"{labels.max():.0f}, but {len(class_names)} names were given")
    with _timed(timings, "detect"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = LabelIssueDetector(random_state=random_state, **detector_options).fit(
            embeddings, labels, class_embeddings=class_embeddings,
            other_embedding=other_embedding, groups=groups, trusted=trusted,
            text_model=text_model,
            class_names=class_names, prompt_set=prompt_set,  # the text side of "sei_prompt"
            progress=progress_bars(progress))
    carried = set(detector.issues_.attrs.get("warnings") or [])
    for caught_warning in caught:  # the summary carries the engine's own warnings: say them once
        if str(caught_warning.message) not in carried:
            warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                   caught_warning.filename, caught_warning.lineno)
    issues = _named_issues(detector.issues_, class_names, paths, groups)
    with _timed(timings, "data_issues"):
        issues = add_data_issues(issues, find_data_issues(  # one space for every method
            detector.issue_neighbor_ids_, detector.issue_neighbor_sims_,
            content_hashes=content_hashes,
            splits=splits, properties=properties, min_similarity=detector.duplicate_similarity,
            features=embeddings, labels=labels),
            splits=splits)
    result = ScanResult(
        issues=issues, entropy_history=detector.entropy_history_,
        agreement_history=detector.agreement_history_, neighbor_ids=detector.neighbor_ids_,
        neighbor_sims=detector.neighbor_sims_, class_names=[str(c) for c in class_names],
        failures=failures.reset_index(drop=True), images=images, summary={},
        pred_probs=np.asarray(detector.pred_probs_, dtype=np.float32))
    result.summary = build_summary(
        issues, result.failures, result.class_names,
        n_duplicate_pairs=len(detector.duplicate_pairs_), n_images=n_images or len(issues),
        settings={**settings, "random_state": random_state}, timings=timings, notes=notes)
    result.summary["data_issues"] = count_data_issues(issues)
    if out is not None:
        with _timed(timings, "save"):
            result.save(out)
    return result


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
