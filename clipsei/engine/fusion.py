"""Fusion: every signal of a fit in one typed record, repeats averaged, and label scores.

A label score is in [0, 1], lower = more likely mislabeled. The default (``"fused"``) is the
weighted mean of five signals' percentiles, mixed with the zero-shot prior at the share
learned from the data where class text is given (:mod:`clipsei.engine.prior`); a reference
method maps its one raw score monotonically into [0, 1] (AUROC and flags unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .heldout import HeldoutScores
from .prior import ZeroShotPrior
from .ranks import fuse_percentiles, percentile_of
from .threshold import ThresholdRunScores

FUSED = "fused"
# held-out margin, pruned held-out margin, in-sample AUM, neighbour vote, Bayes label prob:
# equal, as no unequal weighting measured better (benchmarks/ablate_default.py)
FUSION_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Signals:
    """Every per-sample signal of one fit.

    threshold_runs : in-sample scores from the threshold-sample runs.
    heldout : the held-out rounds' scores, or None for methods without them.
    votes : (N, K) float32 neighbour votes; knn : (N,) their share for the given label.
    prior : the zero-shot prior where class text was given to the default, else None.
    """

    threshold_runs: ThresholdRunScores
    heldout: HeldoutScores | None
    votes: np.ndarray
    knn: np.ndarray
    prior: ZeroShotPrior | None = None

    @classmethod
    def mean_of(cls, repeats) -> "Signals":
        """The repeats of the stochastic stages averaged (neighbours are computed once)."""
        first = repeats[0]
        heldout = (None if first.heldout is None
                   else HeldoutScores.mean_of([r.heldout for r in repeats]))
        return cls(threshold_runs=ThresholdRunScores.mean_of([r.threshold_runs for r in repeats]),
                   heldout=heldout, votes=first.votes, knn=first.knn)

    @property
    def class_probs(self) -> np.ndarray:
        """(N, K) the heads' class probabilities: held-out where there are held-out heads."""
        return self.threshold_runs.head_probs if self.heldout is None else self.heldout.probs

    @property
    def pred_probs(self) -> np.ndarray:
        """(N, K) float32 joint probabilities: mean of the heads' and the neighbours' vote."""
        return (0.5 * (self.class_probs + self.votes)).astype(np.float32)

    @property
    def out_of_sample_probs(self) -> list:
        """(N, K) class probabilities that never saw the sample's label: the held-out heads'
        (where there are) and the leave-one-out neighbour vote."""
        return [self.votes] if self.heldout is None else [self.heldout.probs, self.votes]

    @property
    def error_probs(self) -> np.ndarray | None:
        """(N,) Bayes probability that the given label is wrong, where there are held-out heads."""
        return None if self.heldout is None else 1.0 - self.heldout.bayes_label_prob

    def score_columns(self, labels) -> dict:
        """``{name: (N,) scores}`` for the issues table's per-method columns."""
        columns = dict(self.threshold_runs.real.as_dict())
        if self.heldout is not None:
            columns["heldout_prob"] = self.heldout.probs[np.arange(labels.size), labels]
            columns["heldout_margin"] = self.heldout.margin
            columns["pruned_heldout_margin"] = self.heldout.pruned_margin
            columns["bayes_label_prob"] = self.heldout.bayes_label_prob
        if self.prior is not None:
            columns["zero_shot_prob"] = self.prior.given_prob
        return columns


@dataclass(frozen=True)
class LabelScores:
    """label_scores : (N,) in [0, 1]; threshold_reference : (N,) the real samples on the
    threshold samples' scale; threshold_scores : (T,) the threshold samples'."""

    label_scores: np.ndarray
    threshold_reference: np.ndarray
    threshold_scores: np.ndarray


def compute_label_scores(signals: Signals, *, score: str, n_classes: int) -> LabelScores:
    """Label scores of ``score`` (:data:`FUSED` or a dynamics score name) for K classes."""
    real, threshold = signals.threshold_runs.real, signals.threshold_runs.threshold
    if score == FUSED:
        heldout = signals.heldout
        components = (heldout.margin, heldout.pruned_margin, real.aum, signals.knn,
                      heldout.bayes_label_prob)
        fused = fuse_percentiles(components, FUSION_WEIGHTS)
        if signals.prior is not None:  # its learned share; 0 leaves the scores as they are
            fused = signals.prior.apply(fused)
        # the threshold samples' scale is the AUM percentile, the one component they have
        return LabelScores(fused, percentile_of(real.aum, real.aum),
                           percentile_of(real.aum, threshold.aum))
    transform = _reference_transform(score, np.log(n_classes + 1))  # heads have K + 1 classes
    label_scores = transform(getattr(real, score))
    return LabelScores(label_scores, label_scores, transform(getattr(threshold, score)))


def _reference_transform(score: str, log_k: float):
    """A monotone map of a raw score into [0, 1]."""
    if score == "sei":
        return lambda v: np.clip((v + log_k) / (2 * log_k), 0.0, 1.0)
    if score == "aum":
        return lambda v: 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))
    if score == "entropy_integral":
        return lambda v: np.clip(1.0 + v / log_k, 0.0, 1.0)
    raise ValueError(f"score must be {FUSED!r}, 'sei', 'aum' or 'entropy_integral'; "
                     f"got {score!r}")
