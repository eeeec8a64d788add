"""Act on a saved scan: write a corrected (or clean) manifest of the image files."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ._front import RANDOM_WEIGHTS_WARNING, read_issues
from ._paths import check_output_file

# the front door's one logger name, as it was before relabel left clipsei.pipeline
logger = logging.getLogger("clipsei.pipeline")

# the relabel manifest's last columns: an existing file whose header ends so is relabel's own
RELABEL_HEADER = ",given_label,action"
_COLUMNS = {"is_label_issue", "given_label", "given_class", "suggested_label", "suggested_class",
            "suggested_confidence"}


def relabel(scan_dir, *, accept_above: float, drop_flagged: bool = False,
            out=None, clean: bool = False) -> pd.DataFrame:
    """Write a corrected manifest from a saved scan and return it.

    A flagged image whose suggested label differs from its given one takes the suggestion
    when ``suggested_confidence >= accept_above``; with ``drop_flagged`` the other flagged
    images are left out. The manifest (default ``scan_dir/corrected_manifest.csv``) has
    ``path,label[,group][,split]`` and, for review, ``given_label`` and ``action`` (kept,
    relabelled, or flagged_kept); ``clipsei scan`` reads it back as it is. ``manifest.attrs`` holds
    ``path``, ``n_relabelled`` and ``n_dropped``. An existing ``out`` that clipsei did not
    write is never replaced; ``out`` is checked before anything is read. ``clean`` (implies
    ``drop_flagged``; default file ``clean_manifest.csv``) also leaves out outliers, images
    with property issues and all but one image of each duplicate set
    (:func:`clipsei.data_issues.find_clean_rows`).
    """
    if not 0.0 <= float(accept_above) <= 1.0:
        raise ValueError(f"accept_above must be in [0, 1]; got {accept_above}")
    scan_dir = Path(scan_dir)
    default_name = "clean_manifest.csv" if clean else "corrected_manifest.csv"
    out = Path(out) if out is not None else scan_dir / default_name
    check_output_file(out, option="out", header_end=RELABEL_HEADER)
    if not (scan_dir / "issues.csv").is_file():
        raise FileNotFoundError(f"no saved scan in {scan_dir} (issues.csv not found)")
    issues = read_issues(scan_dir)
    summary = _read_summary(scan_dir)
    _check_issues(issues, scan_dir, summary)
    if clean and not {"duplicate_group", "is_outlier"} & set(issues.columns):
        raise ValueError(f"scan {scan_dir} has no duplicate or outlier columns (a scan from an "
                         "older clipsei), so --clean could not leave them out; scan again, or "
                         "use --drop-flagged")
    flagged = issues["is_label_issue"].astype(bool).to_numpy()
    moved = flagged & (issues["suggested_label"] != issues["given_label"]).to_numpy()
    accept = moved & (issues["suggested_confidence"].to_numpy() >= float(accept_above))
    action = np.where(accept, "relabelled", np.where(flagged, "flagged_kept", "kept"))
    manifest = pd.DataFrame({"path": issues["path"],
                             "label": np.where(accept, issues["suggested_class"],
                                               issues["given_class"]),
                             "given_label": issues["given_class"], "action": action})
    for column in ("split", "group"):  # kept, so that a rescan (and training) sees them
        if column in issues:
            manifest.insert(2, column, issues[column])
    _warn_if_random_weights(scan_dir, summary)
    if drop_flagged or clean:
        from .data_issues import find_clean_rows

        keep = (action != "flagged_kept") & (find_clean_rows(issues) if clean else True)
        manifest = manifest[keep].reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out, index=False)
    manifest.attrs.update(path=str(out), n_relabelled=int(accept.sum()),
                          n_dropped=len(issues) - len(manifest))
    logger.info("relabelled %d, dropped %d; manifest %s", manifest.attrs["n_relabelled"],
                manifest.attrs["n_dropped"], out)
    return manifest


def _read_summary(scan_dir: Path) -> dict:
    """The scan's summary.json, or {} where there is none or it cannot be read (an older
    scan's)."""
    try:
        summary = json.loads((scan_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _check_issues(issues: pd.DataFrame, scan_dir: Path, summary: dict) -> None:
    """Raise a one-line ``ValueError`` when the saved table is not a complete label scan of
    image files: made from embeddings, a caption scan, from another version, or cut short."""
    if "path" not in issues:
        raise ValueError(f"scan {scan_dir} has no image paths (it was made from embeddings); "
                         "relabel writes a manifest of image files")
    if "is_caption_issue" in issues:
        raise ValueError(f"scan {scan_dir} is a caption scan (--captions); relabel takes a "
                         "scan of labelled images")
    missing = sorted(_COLUMNS - set(issues.columns))
    if missing:
        raise ValueError(f"the issues table in {scan_dir} lacks columns {missing} (a scan from "
                         "another clipsei version?); scan again")
    n_scored = summary.get("n_scored")
    if n_scored is not None and len(issues) != n_scored:  # no summary: nothing to compare
        raise ValueError(f"the issues table in {scan_dir} has {len(issues)} rows but the scan "
                         f"scored {n_scored} images (summary.json): it is incomplete; scan again")


def _warn_if_random_weights(scan_dir: Path, summary: dict) -> None:
    """A scan with random CLIP weights suggests noise: say so before its labels are taken."""
    if RANDOM_WEIGHTS_WARNING in (summary.get("warnings") or []):
        warnings.warn(f"scan {scan_dir} used a CLIP model with RANDOM weights (pretrained "
                      "'none'): its suggested labels are not findings", UserWarning, stacklevel=3)
