"""Image-caption pairs from a manifest -> CLIP embeddings of both sides -> mismatched pairs.

``scan_captions(manifest)`` reads a CSV/Parquet manifest with columns ``path,caption`` (paths
relative to the manifest), embeds the images and the captions with one open_clip model, runs
:func:`clipsei.engine.captions.find_caption_issues` and, with ``out``, writes issues.csv,
failures.csv, summary.json and report.html (image and caption side by side).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._paths import check_output_dir, mark_output_dir, mark_output_for_cache
from ._front import RANDOM_WEIGHTS_WARNING, is_random_weights
from .images.data import check_manifest_path, read_manifest



@dataclass
class CaptionScan:
    """issues: one row per embedded pair, most suspicious first. failures: (path, reason) of
    pairs whose image could not be read. summary: counts, cutoff and settings (JSON-ready)."""

    issues: pd.DataFrame
    failures: pd.DataFrame
    summary: dict


def load_caption_manifest(manifest) -> tuple:
    """Read ``manifest`` -> (absolute image paths, captions), both lists of N strings.

    Raises ``FileNotFoundError`` for a missing manifest and ``ValueError`` (naming the row) for
    a missing column or an empty path or caption. Image files are not opened here: missing or
    unreadable ones are reported as failures by the embedding step.
    """
    manifest = check_manifest_path(manifest, what="caption manifest")
    frame = read_manifest(manifest, what="caption manifest", text_columns=("path", "caption"),
                          keep_default_na=False)  # a caption "NA" is text
    missing = {"path", "caption"} - set(frame.columns)
    if missing:
        raise ValueError(f"caption manifest {manifest} must have columns path,caption; missing "
                         f"{sorted(missing)}, found {list(frame.columns)}")
    for column in ("path", "caption"):
        empty = frame[column].isna().to_numpy() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            line = f" (line {row + 2})" if manifest.suffix.lower() == ".csv" else ""
            raise ValueError(f"caption manifest {manifest} row {row}{line} has an empty {column} "
                             f"({int(empty.sum())} such rows)")
    if len(frame) < 3:
        raise ValueError(f"caption manifest {manifest} has {len(frame)} pairs; at least 3 are "
                         "needed")
    paths = [os.path.abspath(manifest.parent / p) for p in frame["path"].astype(str)]
    return paths, frame["caption"].astype(str).tolist()


def _cut_captions_warning(captions, rows, clip) -> list:
    """[a warning] when some captions are longer than the text encoder's context and were cut
    to fit it (only their start is compared with the image), else []."""
    tokens = clip.tokenizer(list(captions))
    padding = clip.tokenizer([""])[0, -1]
    cut = np.flatnonzero((tokens[:, -1] != padding).numpy())
    if not cut.size:
        return []
    return [f"{cut.size} captions are longer than the model's {tokens.shape[1]}-token context and "
            f"were cut to it (only their start is compared with the image), first in manifest "
            f"row {int(rows[cut[0]])}"]


def scan_captions(manifest, *, model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto",
                  cache_dir=None, out=None, n_neighbors=10, batch_size=64, progress=True,
                  intensity="none", random_state=0, decode="cpu") -> CaptionScan:
    """Find image-caption pairs of ``manifest`` whose image and caption disagree.

    model, pretrained: an open_clip model and weights, or ``model`` a loaded
        :class:`clipsei.images.embed.ClipModel`. cache_dir: image embedding cache.
    out: when given, issues.csv, failures.csv, summary.json and report.html are written there
        (checked before any work). Returns a :class:`CaptionScan`.
    """
    from .engine.captions import find_caption_issues
    from .images.data import ImageTable
    from .images.embed import ClipModel, embed_images, encode_texts, load_clip_model

    if out is not None:
        check_output_dir(out, option="out")
    paths, captions = load_caption_manifest(manifest)
    clip = model if isinstance(model, ClipModel) else load_clip_model(model, pretrained,
                                                                      device=device)
    table = ImageTable(paths=paths, labels=np.zeros(len(paths), np.int64), class_names=["image"])
    mark_output_for_cache(out, cache_dir, kind="captions")
    embedded = embed_images(table, clip, cache_dir=cache_dir, batch_size=batch_size,
                            progress=progress, intensity=intensity, decode=decode)
    rows = embedded.indices
    if rows.size < 3:
        raise ValueError(f"only {rows.size} of the {len(paths)} images in {manifest} could be "
                         "read; at least 3 readable pairs are needed"
                         + _first_failure(embedded.failures))
    scored_captions = [captions[i] for i in rows]
    text_embeddings = encode_texts(scored_captions, clip)
    scores = find_caption_issues(embedded.embeddings, text_embeddings, n_neighbors=n_neighbors,
                                 random_state=random_state)
    issues = _named_issues(scores, rows, paths, captions)
    failures = embedded.failures[["path", "reason"]]
    summary = _summary(issues, scores.attrs, len(paths), len(failures), clip, manifest)
    summary["warnings"] += _cut_captions_warning(scored_captions, rows, clip)
    if is_random_weights(clip):
        summary["warnings"].insert(0, RANDOM_WEIGHTS_WARNING)
    result = CaptionScan(issues=issues, failures=failures, summary=summary)
    if out is not None:
        save_caption_scan(result, out)
    return result


def _first_failure(failures: pd.DataFrame) -> str:
    return f"; first failure: {failures['reason'].iloc[0]}" if len(failures) else ""


def _named_issues(scores: pd.DataFrame, rows, paths, captions) -> pd.DataFrame:
    """Scores keyed by manifest row, with paths, captions and the suggested caption's text."""
    suggested = scores["suggested_caption"].to_numpy()
    suggested_rows = np.where(suggested >= 0, rows[np.maximum(suggested, 0)], -1)
    named = pd.DataFrame({
        "index": rows, "path": [paths[i] for i in rows],
        "caption": [captions[i] for i in rows],
        "suggested_row": suggested_rows,
        "suggested_caption": [captions[i] if i >= 0 else "" for i in suggested_rows],
    })
    columns = [c for c in scores.columns if c != "suggested_caption"]
    named = pd.concat([named, scores[columns].reset_index(drop=True)], axis=1)
    return named.sort_values("rank", kind="stable").reset_index(drop=True)


def _summary(issues, attrs, n_pairs, n_failed, clip, manifest) -> dict:
    n_flagged = int(issues["is_caption_issue"].sum())
    return {"kind": "captions", "n_pairs": n_pairs, "n_scored": len(issues),
            "n_failed": n_failed, "n_flagged": n_flagged,
            "flagged_fraction": n_flagged / max(len(issues), 1),
            "cutoff": attrs["cutoff"], "method": attrs["method"],
            "n_neighbors": attrs["n_neighbors"],
            "estimated_mismatch_rate": attrs["estimated_mismatch_rate"],
            "warnings": list(attrs["warnings"]),
            "settings": {"manifest": str(manifest), "model": clip.name,
                         "pretrained": clip.pretrained, "weights_id": clip.weights_id,
                         "device": str(clip.device)}}


def save_caption_scan(result: CaptionScan, out) -> Path:
    """Write issues.csv, failures.csv, summary.json and report.html into folder ``out``."""
    from .report.captions import write_caption_report

    out = mark_output_dir(check_output_dir(out, option="out"), kind="captions")
    result.issues.to_csv(out / "issues.csv", index=False)
    result.failures.to_csv(out / "failures.csv", index=False)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=1, default=float))
    write_caption_report(out / "report.html", result.issues, summary=result.summary)
    return out
