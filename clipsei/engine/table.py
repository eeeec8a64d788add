"""The issues table: one row per sample, labels, suggestions, scores, flag and rank; and the
values a fit leaves on the estimator (:class:`FittedValues`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .class_signal import ClassSignal, compute_class_signal
from .flagging import FlagCounts, Flags, compute_flagged_share_per_class, decision_attrs
from .noise_model import count_errors_per_class
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


@dataclass(frozen=True)
class FittedValues:
    """What a fit leaves on the estimator: each name in :attr:`ATTRIBUTES` becomes the
    attribute ``<name>_``. Per-class arrays span all K classes, ``pred_probs`` is (N, K),
    histories are (E, N). ``signal``, ``counts``, ``warnings`` and ``decision`` feed the
    issues table's ``attrs``."""

    pred_probs: np.ndarray
    threshold_scores: np.ndarray
    cutoff: float
    class_cutoffs: np.ndarray
    estimated_errors_per_class: np.ndarray
    estimated_error_rate: float
    flagged_share_per_class: np.ndarray
    signal: ClassSignal
    duplicate_pairs: pd.DataFrame
    entropy_history: np.ndarray
    agreement_history: np.ndarray
    given_prob_history: np.ndarray
    issues: pd.DataFrame
    counts: FlagCounts
    warnings: list
    decision: dict

    ATTRIBUTES = ("pred_probs", "threshold_scores", "cutoff", "class_cutoffs",
                  "estimated_errors_per_class", "estimated_error_rate",
                  "flagged_share_per_class", "class_signal", "duplicate_pairs",
                  "entropy_history", "agreement_history", "given_prob_history", "issues")

    @property
    def class_signal(self) -> dict:
        return self.signal.as_dict()


def assemble_fitted(inputs, flags: Flags, *, label_scores, signal_probs, error_rate,
                    class_probs, pred_probs, knn, scores: dict, histories: tuple,
                    threshold_scores, duplicate_pairs: pd.DataFrame) -> FittedValues:
    """Class signal (nothing flagged when the embeddings carry no class information), the
    per-class values and the issues table of one fit.

    inputs : the :class:`clipsei.engine.inputs.FitInputs`; signal_probs : list of (N, K')
    out-of-sample probabilities; error_rate : the calibrated error rate or None;
    class_probs, pred_probs : (N, K') the predicted and suggested classes' probabilities;
    knn : (N,) neighbour agreement; scores : name -> (N,) score columns; histories :
    (entropy, agreement, given-prob) histories (E, N); threshold_scores : (T,);
    duplicate_pairs : conflicting duplicates (columns ``i``, ``j``).
    """
    labels, classes = inputs.labels, inputs.classes
    n_classes = classes.present.size
    signal = compute_class_signal(signal_probs, labels)
    if not signal.informative:
        flags = flags.without_flags(label_scores, labels)
    decision = decision_attrs(flags, error_rate, informative=signal.informative)
    warning_lines = ([signal.warning] if signal.warning else []) + decision.pop("notes")
    issues = build_issues_table(
        labels=inputs.original_labels, label_scores=label_scores,
        is_label_issue=flags.is_label_issue,
        predicted_label=classes.original(class_probs.argmax(axis=1)),
        suggested_label=classes.original(pred_probs.argmax(axis=1)), pred_probs=pred_probs,
        knn_agreement=knn, scores=scores, duplicate_pairs=duplicate_pairs,
        error_probs=flags.error_probability)
    entropy_history, agreement_history, given_prob_history = histories
    return FittedValues(
        pred_probs=classes.expand_columns(pred_probs), threshold_scores=threshold_scores,
        cutoff=flags.cutoff, class_cutoffs=classes.expand(flags.class_cutoffs, np.nan),
        estimated_errors_per_class=classes.expand(count_errors_per_class(pred_probs, labels), 0),
        estimated_error_rate=flags.counts.confident_learning / labels.size,
        flagged_share_per_class=classes.expand(compute_flagged_share_per_class(
            flags.is_label_issue, labels, n_classes=n_classes), np.nan),
        signal=signal, duplicate_pairs=duplicate_pairs, entropy_history=entropy_history,
        agreement_history=agreement_history, given_prob_history=given_prob_history,
        issues=issues, counts=flags.counts, warnings=warning_lines, decision=decision)
