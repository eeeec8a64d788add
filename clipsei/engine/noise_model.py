"""The noise model of confident learning (Northcutt et al. 2021): counts, transitions and
Bayes error probabilities, from out-of-sample-like class probabilities."""

from __future__ import annotations

import numpy as np


def estimate_error_rate(pred_probs, labels) -> float:
    """Share of samples whose given label is likely wrong, by confident learning's count.

    Class ``j``'s threshold is the mean probability of ``j`` over the samples labelled ``j``;
    a sample counts as an error when, among the classes reaching their threshold, the most
    probable one is not its given label. pred_probs : (N, K); labels : (N,) ints.
    """
    return float(count_errors_per_class(pred_probs, labels).sum() / np.asarray(labels).size)


def _confident_classes(pred_probs, labels) -> tuple:
    """Each sample's most probable class among those reaching their per-class threshold
    (N,) int, and whether any class reached it (N,) bool (see :func:`estimate_error_rate`)."""
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    n_classes = pred_probs.shape[1]
    thresholds = np.array([pred_probs[labels == j, j].mean() if (labels == j).any() else 1.0
                           for j in range(n_classes)])
    confident = pred_probs >= thresholds
    return np.where(confident, pred_probs, -1.0).argmax(axis=1), confident.any(axis=1)


def estimate_label_transitions(pred_probs, labels) -> np.ndarray:
    """(K, K) ``T[c, g]``: the probability that a sample of true class ``c`` is labelled ``g``.

    From confident learning's joint (Northcutt et al. 2021): each counted sample adds one at
    (its given label, its confident class; see :func:`estimate_error_rate`), each given
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
    their confident class is another (see :func:`estimate_error_rate`, whose count is the
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
