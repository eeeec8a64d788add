"""Scores -> cutoff, flags, ranks and the issues table (numpy in, pandas out).

Lower scores mean "more likely mislabeled" everywhere. The cutoff comes from threshold
samples (Pleiss et al. 2020; Li et al. 2026): samples deliberately relabelled to an extra
class, so their scores show what a mislabeled sample looks like on this very data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validation import check_option

CUTOFF_RULES = ("mean", "percentile")


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


def estimate_noise_rate(pred_probs, labels) -> float:
    """Share of samples whose given label is likely wrong, by confident learning's count.

    Northcutt et al. (2021): class ``j``'s threshold ``t_j`` is the mean probability of ``j``
    over the samples labelled ``j``; a sample is counted as an error when, among the
    classes whose probability reaches their threshold, the most probable one is not its
    given label. The per-class thresholds make the count robust to a classifier that is
    uniformly over- or under-confident.

    pred_probs : (N, K) out-of-sample-like class probabilities; labels : (N,) ints.
    """
    return float(count_errors_per_class(pred_probs, labels).sum() / np.asarray(labels).size)


def _confident_classes(pred_probs, labels) -> tuple:
    """Each sample's most probable class among those reaching their per-class threshold
    (N,) int, and whether any class reached it (N,) bool (see :func:`estimate_noise_rate`)."""
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    n_classes = pred_probs.shape[1]
    thresholds = np.array([pred_probs[labels == j, j].mean() if (labels == j).any() else 1.0
                           for j in range(n_classes)])
    confident = pred_probs >= thresholds
    return np.where(confident, pred_probs, -1.0).argmax(axis=1), confident.any(axis=1)


def estimate_label_transitions(pred_probs, labels) -> np.ndarray:
    """(K, K) ``T[c, g]``: the probability that a sample of true class ``c`` is labelled ``g``.

    From confident learning's joint (Northcutt et al. 2021): each counted sample adds one at
    (its given label, its confident class; see :func:`estimate_noise_rate`), each given
    label's counts are rescaled to that label's size, and each true class's counts are
    normalised over the given labels. A class no sample was confidently assigned to keeps
    ``T[c, c] = 1``.
    """
    labels = np.asarray(labels)
    n_classes = np.asarray(pred_probs).shape[1]
    best, counted = _confident_classes(pred_probs, labels)
    joint = np.zeros((n_classes, n_classes))  # [given, true]
    np.add.at(joint, (labels[counted], best[counted]), 1.0)
    sizes = np.bincount(labels, minlength=n_classes)
    row_sums = joint.sum(axis=1, keepdims=True)
    joint = np.where(row_sums > 0, joint / np.where(row_sums > 0, row_sums, 1) * sizes[:, None],
                     0.0)
    per_true = joint.sum(axis=0)  # (K,) over given labels
    transitions = np.eye(n_classes)
    seen = per_true > 0
    transitions[seen] = (joint[:, seen] / per_true[seen]).T
    return transitions


def count_errors_per_class(pred_probs, labels) -> np.ndarray:
    """(K,) int, how many samples of each *given* label confident learning counts as errors:
    their confident class is another (see :func:`estimate_noise_rate`, whose count is the
    sum)."""
    labels = np.asarray(labels)
    best, counted = _confident_classes(pred_probs, labels)
    return np.bincount(labels[counted & (best != labels)],
                       minlength=np.asarray(pred_probs).shape[1])


def compute_error_probabilities(class_probs, labels, transitions) -> np.ndarray:
    """(N,) probability that each given label is wrong, by Bayes under class-conditional noise.

    ``P(true = g | x, given = g) = p(g | x) T[g, g] / sum_c p(c | x) T[c, g]``, where
    ``class_probs`` (N, K) estimate the *true* class posterior ``p(c | x)`` (e.g. heads that
    never trained on suspected errors), ``labels`` (N,) are the given labels ``g`` and
    ``transitions`` (K, K) is ``T[c, g] = P(given g | true c)``.
    """
    class_probs = np.asarray(class_probs, dtype=np.float64)
    labels = np.asarray(labels)
    transitions = np.asarray(transitions, dtype=np.float64)
    label_given_class = transitions[:, labels].T  # (N, K): T[c, g_i]
    correct = class_probs[np.arange(labels.size), labels] * transitions[labels, labels]
    total = (class_probs * label_given_class).sum(axis=1)
    return np.clip(1.0 - correct / np.maximum(total, 1e-12), 0.0, 1.0)


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


def compute_noise_rate_per_class(is_label_issue, labels, *, n_classes: int) -> np.ndarray:
    """Fraction of each given class that is flagged, (K,) float64 (NaN for an empty class)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    flagged = np.bincount(labels[np.asarray(is_label_issue, dtype=bool)], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, flagged / counts, np.nan)


def rank_by_score(label_scores) -> np.ndarray:
    """1-based rank of each sample, 1 = lowest score = most suspicious; ties by row order."""
    order = np.argsort(np.asarray(label_scores), kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(1, order.size + 1)
    return ranks


def build_issues_table(*, labels, label_scores, is_label_issue, head_probs, pred_probs,
                       knn_agreement, scores: dict, duplicate_pairs: pd.DataFrame,
                       error_probs=None) -> pd.DataFrame:
    """One row per sample, input order: labels, suggestions, scores, flag and rank.

    ``head_probs`` (N, K) give ``predicted_label``; ``pred_probs`` (N, K), the head and
    neighbour mixture, give ``suggested_label`` and its ``suggested_confidence``.

    ``scores`` maps score names (``sei``, ``aum``, ...) to (N,) arrays; each becomes a
    ``<name>_score`` column. ``duplicate_pairs`` (columns ``i``, ``j``) fills
    ``conflicting_duplicate`` with the most similar conflicting row, or -1.
    ``error_probs`` (N,), where given, becomes ``error_probability``.
    """
    pred_probs = np.asarray(pred_probs)
    suggested = pred_probs.argmax(axis=1)
    rows = np.arange(labels.size)
    table = pd.DataFrame({
        "given_label": labels,
        "predicted_label": np.asarray(head_probs).argmax(axis=1).astype(np.int64),
        "suggested_label": suggested.astype(np.int64),
        "suggested_confidence": pred_probs[rows, suggested].astype(np.float32),
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
