"""The issues table: one row per sample, labels, suggestions, scores, flag and rank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .ranks import rank_by_score


def build_issues_table(*, labels, label_scores, is_label_issue, predicted_label,
                       suggested_label, pred_probs, knn_agreement, scores: dict,
                       duplicate_pairs: pd.DataFrame, error_probs=None) -> pd.DataFrame:
    """One row per sample, input order: labels, suggestions, scores, flag and rank.

    ``predicted_label`` (N,) is the heads' class, ``suggested_label`` (N,) the most probable
    class of ``pred_probs`` (N, K), which gives its ``suggested_confidence``.

    ``scores`` maps score names (``sei``, ``aum``, ...) to (N,) arrays; each becomes a
    ``<name>_score`` column. ``duplicate_pairs`` (columns ``i``, ``j``) fills
    ``conflicting_duplicate`` with the most similar conflicting row, or -1.
    ``error_probs`` (N,), where given, becomes ``error_probability``.
    """
    pred_probs = np.asarray(pred_probs)
    table = pd.DataFrame({
        "given_label": labels,
        "predicted_label": np.asarray(predicted_label, dtype=np.int64),
        "suggested_label": np.asarray(suggested_label, dtype=np.int64),
        "suggested_confidence": pred_probs.max(axis=1).astype(np.float32),
        "label_score": np.asarray(label_scores, dtype=np.float64),
        "is_label_issue": np.asarray(is_label_issue, dtype=bool),
        "rank": rank_by_score(label_scores),
        "knn_agreement": np.asarray(knn_agreement, dtype=np.float32),
    })
    if error_probs is not None:
        table.insert(table.columns.get_loc("is_label_issue") + 1, "error_probability",
                     np.asarray(error_probs, dtype=np.float32))
    for name, values in scores.items():
        column = name if name.endswith("_integral") else f"{name}_score"
        table[column] = np.asarray(values, dtype=np.float32)
    partner = np.full(labels.size, -1, dtype=np.int64)
    pairs = zip(duplicate_pairs["i"].to_numpy()[::-1], duplicate_pairs["j"].to_numpy()[::-1])
    for first, second in pairs:
        partner[first], partner[second] = second, first  # most similar pair written last wins
    table["conflicting_duplicate"] = partner
    return table


def issues_attrs(detector, counts, warning_lines) -> dict:
    """The issues table's ``attrs`` from a fitted detector's attributes (JSON-ready)."""
    return {
        "method": detector.method,
        "cutoff": float(detector.cutoff_) if np.isfinite(detector.cutoff_) else None,
        "class_cutoffs": [float(c) if np.isfinite(c) else None for c in detector.class_cutoffs_],
        "estimated_error_rate": detector.estimated_error_rate_,
        "estimated_errors_per_class": [int(c) for c in detector.estimated_errors_per_class_],
        "flagged_share_per_class": [float(s) if np.isfinite(s) else None
                                    for s in detector.flagged_share_per_class_],
        "n_threshold_samples": int(detector.threshold_scores_.size),
        "error_counts": counts.as_dict(),
        "heldout_logit_scale": detector.heldout_logit_scale_,
        "n_repeats": detector.n_repeats_,
        "settings": detector.get_params(),
        "warnings": warning_lines,
        "class_signal": detector.class_signal_,
    }
