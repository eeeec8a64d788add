"""Held-out rounds: cross-fitted heads that never train on the rows they score.

The first round trains on every label; the second, pruned round never trains on the first
round's suspects. The pruned heads' class posterior and confident learning's transitions
give each given label's probability of being right by Bayes' rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .heads import train_crossfit_head
from .noise_model import (compute_error_probabilities, count_errors_per_class,
                          estimate_label_transitions)
from .ranks import fuse_percentiles, rank_by_score

# weights of the first round's own fusion (held-out margin, in-sample AUM, neighbour vote),
# which only picks the suspects the pruned round leaves out; equal weights scored no better
FIRST_ROUND_WEIGHTS = (2.0, 1.0, 1.0)


@dataclass(frozen=True)
class HeldoutScores:
    """What the two held-out rounds say about every sample.

    probs : (N, K) float32, the first round's softmax averaged over epochs.
    margin, pruned_margin : (N,) float64, each round's given-label logit margin averaged over
        epochs.
    bayes_label_prob : (N,) float64, the probability that the given label is right.
    """

    probs: np.ndarray
    margin: np.ndarray
    pruned_margin: np.ndarray
    bayes_label_prob: np.ndarray

    @classmethod
    def mean_of(cls, repeats) -> "HeldoutScores":
        """Every field averaged over the repeats."""
        if len(repeats) == 1:
            return repeats[0]
        return cls(**{name: np.mean([getattr(r, name) for r in repeats], axis=0)
                      for name in ("probs", "margin", "pruned_margin", "bayes_label_prob")})


def run_heldout_rounds(x, labels, *, n_classes: int, votes, in_sample_aum, knn, rng,
                       **head_options) -> HeldoutScores:
    """Both held-out rounds on unit rows ``x`` (N, D) for given ``labels`` (N,).

    votes : (N, K) neighbour votes; in_sample_aum, knn : (N,) the threshold runs' AUM and the
    neighbours' vote for the given label (they pick the suspects with the first round's
    margin). ``head_options`` go to :func:`clipsei.engine.heads.train_crossfit_head`.
    """
    first = train_crossfit_head(x, labels, n_classes=n_classes, random_state=rng, **head_options)
    margin = first.margin_history.mean(axis=0, dtype=np.float64)
    first_joint = 0.5 * (first.mean_probs + votes)
    first_scores = fuse_percentiles((margin, in_sample_aum, knn), FIRST_ROUND_WEIGHTS)
    per_class_errors = count_errors_per_class(first_joint, labels)
    trusted = ~select_suspects(first_scores, labels, int(per_class_errors.sum()),
                               per_class_errors)
    pruned = train_crossfit_head(x, labels, n_classes=n_classes, train_mask=trusted,
                                 random_state=rng, **head_options)
    transitions = estimate_label_transitions(first_joint, labels)
    return HeldoutScores(
        probs=first.mean_probs, margin=margin,
        pruned_margin=pruned.margin_history.mean(axis=0, dtype=np.float64),
        bayes_label_prob=1.0 - compute_error_probabilities(pruned.mean_probs, labels,
                                                           transitions))


def select_suspects(scores, labels, n_suspects: int, per_class_counts) -> np.ndarray:
    """(N,) bool: the ``n_suspects`` lowest ``scores`` overall and, within each given class
    ``j``, at least its ``per_class_counts[j]`` lowest (confident learning's count for it)."""
    suspects = rank_by_score(scores) <= n_suspects
    for label, count in enumerate(np.asarray(per_class_counts)):
        rows = np.flatnonzero(labels == label)
        suspects[rows[np.argsort(scores[rows], kind="stable")[:count]]] = True
    return suspects
