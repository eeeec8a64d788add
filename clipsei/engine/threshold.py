"""Threshold-sample runs: disjoint slices, and each sample's scores from its runs.

Threshold samples (Pleiss et al. 2020; Li et al. 2026) are real samples relabelled to an
extra class, so their scores show what a mislabeled sample looks like on this very data.
With two runs on disjoint slices every sample is real in at least one run; its scores come
from those runs only, and each threshold sample's score (against the extra class) from its
own run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dynamics import DynamicsScores
from .heads import TrainingDynamics, plan_head, train_heads

_HISTORIES = ("entropy_history", "agreement_history", "given_prob_history")


@dataclass(frozen=True)
class ThresholdRunScores:
    """What the threshold-sample runs say about every sample.

    real : (N,) scores of each sample from the runs where it was real (mean over them).
    threshold : (T,) scores of the threshold samples against the extra class.
    head_probs : (N, K) in-sample class probabilities (extra class dropped, rows sum to 1).
    entropy_history, given_prob_history : (E, N) float16; agreement_history : (E, N) bool,
        each sample's column from the first run where it was real.
    """

    real: DynamicsScores
    threshold: DynamicsScores
    head_probs: np.ndarray
    entropy_history: np.ndarray
    agreement_history: np.ndarray
    given_prob_history: np.ndarray

    @classmethod
    def mean_of(cls, repeats) -> "ThresholdRunScores":
        """Repeats averaged: real scores and probabilities averaged, threshold samples'
        scores pooled, histories from the first repeat."""
        first = repeats[0]
        if len(repeats) == 1:
            return first
        return cls(
            real=DynamicsScores.combine([r.real for r in repeats], lambda v: np.mean(v, axis=0)),
            threshold=DynamicsScores.combine([r.threshold for r in repeats], np.concatenate),
            head_probs=np.mean([r.head_probs for r in repeats], axis=0),
            **{name: getattr(first, name) for name in _HISTORIES})


def draw_threshold_slices(n_samples: int, fraction: float, n_runs: int, rng) -> list:
    """``n_runs`` disjoint random index sets of ``round(fraction * N)`` samples (at least 1)."""
    size = max(1, int(round(fraction * n_samples)))
    order = rng.permutation(n_samples)
    return [np.sort(order[run * size:(run + 1) * size]) for run in range(n_runs)]


def run_threshold_samples(x, labels, *, n_classes: int, slices, head_init, rng,
                          logit_scale: float = 10.0, **head_options) -> ThresholdRunScores:
    """Train one in-sample head per slice (its rows relabelled to class ``n_classes``; the
    runs' heads train together) on unit rows ``x`` (N, D) and combine the runs (see
    :func:`combine_threshold_runs`)."""
    plans = []
    for slice_ in slices:
        run_labels = labels.copy()
        run_labels[slice_] = n_classes  # threshold samples join the extra class
        plans.append(plan_head(run_labels, rng, logit_scale=logit_scale))
    runs = train_heads(x, plans, n_classes=n_classes + 1, class_embeddings=head_init,
                       **head_options)
    return combine_threshold_runs(runs, slices, n_classes=n_classes)


def combine_threshold_runs(runs: list[TrainingDynamics], slices, *, n_classes: int
                           ) -> ThresholdRunScores:
    """Per-sample scores from the runs (one per slice) where the sample was *not* a threshold
    sample; each threshold sample's own score from the run of its slice."""
    n_samples = runs[0].mean_probs.shape[0]
    scores = [DynamicsScores.from_histories(run) for run in runs]
    weight = np.zeros(n_samples)
    probs = np.zeros((n_samples, n_classes), np.float32)  # (N, K): 400 MB at 1M x 100
    totals = {name: np.zeros(n_samples) for name in scores[0].as_dict()}
    history_run = np.full(n_samples, -1)
    for position, (run, run_scores, slice_) in enumerate(zip(runs, scores, slices)):
        real_mask = np.ones(n_samples, dtype=bool)
        real_mask[slice_] = False
        weight[real_mask] += 1
        for name, values in run_scores.as_dict().items():
            totals[name][real_mask] += values[real_mask]
        probs[real_mask] += run.mean_probs[real_mask, :n_classes]
        history_run[real_mask & (history_run < 0)] = position
    threshold = DynamicsScores.combine(
        [part.map(lambda _, values, s=slice_: values[s]) for part, slice_ in zip(scores, slices)],
        np.concatenate)
    return ThresholdRunScores(
        real=DynamicsScores(**{name: total / weight for name, total in totals.items()}),
        threshold=threshold, head_probs=_normalise_rows(probs),
        **_gather_histories(runs, history_run))


def _normalise_rows(probs: np.ndarray) -> np.ndarray:
    """``probs`` (N, K) scaled in place so that each row sums to 1."""
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def _gather_histories(runs, history_run) -> dict:
    """(E, N) histories, each sample's column taken from run ``history_run[sample]``."""
    gathered = {name: getattr(runs[0], name).copy() for name in _HISTORIES}
    for position in np.unique(history_run):
        if position <= 0:
            continue
        columns = history_run == position
        for name in gathered:
            gathered[name][:, columns] = getattr(runs[position], name)[:, columns]
    return gathered
