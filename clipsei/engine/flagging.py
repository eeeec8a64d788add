"""Flagging: how many samples to flag, and the cutoffs on the label score that flag them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._validation import check_option
from .ranks import rank_by_score

CUTOFF_RULES = ("mean", "percentile")
COUNT_RULE = "count"  # flag as many as confident learning counts (or the expected-F1 count)


@dataclass(frozen=True)
class FlagCounts:
    """How many samples look mislabeled: ``threshold`` (below the threshold samples' mean),
    ``confident_learning`` (the sum of its per-class counts) and, with Bayes error
    probabilities, ``expected_f1`` (see :func:`compute_expected_f1_count`). ``threshold`` is
    None for a method without threshold samples (``"zero_shot"``)."""

    threshold: int | None
    confident_learning: int
    expected_f1: int | None = None

    def as_dict(self) -> dict:
        counts = {"confident_learning": self.confident_learning}
        if self.threshold is not None:
            counts = {"threshold": self.threshold, **counts}
        if self.expected_f1 is not None:
            counts["expected_f1"] = self.expected_f1
        return counts


@dataclass(frozen=True)
class Flags:
    """is_label_issue : (N,) bool; cutoff : float on the label score (NaN where each class has
    its own); class_cutoffs : (K,) float (NaN for a class without rows); error_probability :
    (N,) aligned error probabilities or None; counts : :class:`FlagCounts`."""

    is_label_issue: np.ndarray
    cutoff: float
    class_cutoffs: np.ndarray
    error_probability: np.ndarray | None
    counts: FlagCounts

    def without_flags(self, label_scores, labels) -> "Flags":
        """The same scores with nothing flagged (each class's cutoff at its lowest score)."""
        none = np.zeros(self.is_label_issue.shape, dtype=bool)
        return replace(self, is_label_issue=none, cutoff=float("nan"), class_cutoffs=(
            compute_class_cutoffs(label_scores, labels, none, n_classes=self.class_cutoffs.size)))


def flag_issues(label_scores, labels, *, n_classes: int, rule: str, percentile: float,
                threshold_reference, threshold_scores, class_error_counts,
                error_probs=None) -> Flags:
    """Flags on (N,) ``label_scores`` under ``rule`` (:data:`CUTOFF_RULES` or ``"count"``).

    threshold_reference : (N,) real samples on the threshold samples' scale; threshold_scores
    : (T,) the threshold samples'; class_error_counts : (K,) confident learning's per-class
    counts; error_probs : (N,) Bayes error probabilities or None. With ``"count"`` and
    ``error_probs`` each class gets its own cutoff: the largest aligned error probabilities
    are flagged, as many as the larger of the confident-learning and expected-F1 counts.
    """
    counts = FlagCounts(
        threshold=int((threshold_reference < compute_cutoff(threshold_scores)).sum()),
        confident_learning=int(np.sum(class_error_counts)))
    aligned = None
    if error_probs is not None:
        aligned = align_error_probabilities(error_probs, label_scores, labels, class_error_counts)
        flag_order = np.lexsort((label_scores, -aligned))  # ties: lower score first
        counts = replace(counts, expected_f1=compute_expected_f1_count(aligned,
                                                                       np.argsort(flag_order)))
    if rule == COUNT_RULE and aligned is not None:
        is_issue = np.zeros(labels.size, dtype=bool)
        is_issue[flag_order[:max(counts.confident_learning, counts.expected_f1)]] = True
        class_cutoffs = compute_class_cutoffs(label_scores, labels, is_issue, n_classes=n_classes)
        return Flags(is_issue, float("nan"), class_cutoffs, aligned, counts)
    if rule == COUNT_RULE:  # exactly the counted number; ties broken by row order
        is_issue = rank_by_score(label_scores) <= counts.confident_learning
        cutoff = compute_cutoff_for_count(label_scores, counts.confident_learning)
    else:
        cutoff = compute_cutoff(threshold_scores, rule=rule, percentile=percentile)
        is_issue = label_scores < cutoff
    return Flags(is_issue, cutoff, np.full(n_classes, cutoff), aligned, counts)


def compute_cutoff(threshold_scores, *, rule: str = "mean", percentile: float = 99.0) -> float:
    """A score cutoff from the scores of threshold samples.

    ``"mean"``: their mean (the SEI paper's rule). ``"percentile"``: their ``percentile``-th
    percentile (AUM's rule, 99 by default: flag anything scoring like almost any threshold
    sample). Samples scoring strictly below the cutoff are flagged.
    """
    check_option(rule, CUTOFF_RULES, name="cutoff rule")
    threshold_scores = np.asarray(threshold_scores, dtype=np.float64)
    if threshold_scores.size == 0:
        raise ValueError("threshold_scores must not be empty")
    if rule == "mean":
        return float(threshold_scores.mean())
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100]; got {percentile}")
    return float(np.percentile(threshold_scores, percentile))


def compute_expected_f1_count(error_probs, label_scores) -> int:
    """How many of the lowest ``label_scores`` to flag so that the expected F1 is highest.

    With ``q`` the (N,) error probabilities, flagging the ``m`` lowest scores has expected
    true positives ``sum of their q`` against ``sum(q)`` expected errors, so its plug-in
    expected F1 is ``2 * sum_{i <= m} q_(i) / (m + sum(q))``; the count maximising it, but
    never more than the number of samples whose ``q`` exceeds the mean ``q``. Past that, a
    flag lands on a sample no likelier to be wrong than one drawn at random, which only
    F1's reward for recall pays for: where ``q`` is nearly flat (embeddings that cannot
    tell the classes apart) the uncapped count is every sample.
    """
    error_probs = np.asarray(error_probs, dtype=np.float64)
    if error_probs.sum() <= 0:
        return 0
    order = np.argsort(np.asarray(label_scores), kind="stable")
    expected_f1 = 2 * np.cumsum(error_probs[order]) / (np.arange(1, order.size + 1)
                                                      + error_probs.sum())
    n_above_mean = int((error_probs > error_probs.mean()).sum())
    return min(int(np.argmax(expected_f1)) + 1, n_above_mean)


def align_error_probabilities(error_probs, label_scores, labels, class_error_counts
                              ) -> np.ndarray:
    """(N,) error probabilities re-dealt within each given class in ``label_scores`` order.

    Within given class ``j`` the (N,) ``error_probs`` are first scaled down, never up, so
    that they sum to at most ``class_error_counts[j]`` (confident learning's count for the
    class, (K,)); then the class's largest probability goes to its lowest score, the
    second largest to its second lowest, and so on. Each class keeps the *levels* of its
    probabilities (a minority label that is often wrong keeps its higher ones) while the
    order inside the class is the score's, which ranks errors better than the
    probabilities alone. Flagging the largest aligned probabilities therefore flags, in
    each class, that class's lowest scores: a per-class cutoff on ``label_scores``.
    """
    error_probs = np.asarray(error_probs, dtype=np.float64)
    label_scores = np.asarray(label_scores)
    labels = np.asarray(labels)
    aligned = np.empty_like(error_probs)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        total = error_probs[rows].sum()
        scale = min(1.0, class_error_counts[label] / total) if total > 0 else 1.0
        by_score = rows[np.argsort(label_scores[rows], kind="stable")]
        aligned[by_score] = np.sort(error_probs[rows])[::-1] * scale
    return aligned


def compute_class_cutoffs(label_scores, labels, is_label_issue, *, n_classes: int
                          ) -> np.ndarray:
    """(K,) cutoffs on ``label_scores``, one per given class, that separate each class's
    flagged rows (below) from its other rows; NaN for a class without rows. Exact where
    the flags are each class's lowest scores (ties may move the count)."""
    label_scores = np.asarray(label_scores, dtype=np.float64)
    is_label_issue = np.asarray(is_label_issue, dtype=bool)
    cutoffs = np.full(n_classes, np.nan)
    for label in range(n_classes):
        rows = labels == label
        if rows.any():
            cutoffs[label] = compute_cutoff_for_count(label_scores[rows],
                                                      int(is_label_issue[rows].sum()))
    return cutoffs


def compute_cutoff_for_count(label_scores, n_flagged: int) -> float:
    """A cutoff with ``n_flagged`` scores strictly below it (ties may move the count)."""
    ordered = np.sort(np.asarray(label_scores, dtype=np.float64))
    if n_flagged <= 0:
        return float(ordered[0])
    if n_flagged >= ordered.size:
        return float(np.nextafter(ordered[-1], np.inf))
    return float((ordered[n_flagged - 1] + ordered[n_flagged]) / 2)


def compute_flagged_share_per_class(is_label_issue, labels, *, n_classes: int) -> np.ndarray:
    """(K,) float64 share of each given class that is flagged (NaN for an empty class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    flagged = np.bincount(labels[np.asarray(is_label_issue, dtype=bool)], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, flagged / counts, np.nan)
