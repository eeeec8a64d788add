"""Threshold-sample bookkeeping: disjoint slices, and each sample's scores from its runs.

Threshold samples (Pleiss et al. 2020; Li et al. 2026) are real samples relabelled to an
extra class, so their scores show what a mislabeled sample looks like on this very data.
With two runs on disjoint slices every sample is real in at least one run; its scores come
from those runs only, and each threshold sample's score (against the extra class) from its
own run.
"""

from __future__ import annotations

import numpy as np

from .neighbors import compute_neighbor_votes


def draw_threshold_slices(n_samples: int, fraction: float, n_runs: int, rng) -> list:
    """``n_runs`` disjoint random index sets of ``round(fraction * N)`` samples (at least 1)."""
    size = max(1, int(round(fraction * n_samples)))
    order = rng.permutation(n_samples)
    return [np.sort(order[run * size:(run + 1) * size]) for run in range(n_runs)]


def combine_threshold_runs(runs, slices, n_scales, y, n_classes, neighbor_ids,
                           neighbor_sims) -> dict:
    """Per-sample scores from the runs where the sample was *not* a threshold sample.

    ``runs`` is slice-major (``runs[s * n_scales + j]``: slice ``s``, scale ``j``). For each
    scale, a real sample's score is its mean over the runs where it was not a threshold
    sample; a threshold sample's (its score against the extra class) comes from the run of
    its own slice. Histories come from the first scale's run in which the sample was real.
    """
    n_samples = y.size
    names = list(runs[0]["scores"])
    by_scale, threshold_by_scale = [], []
    for scale_index in range(n_scales):
        scale_runs = runs[scale_index::n_scales]
        real, threshold = _scores_outside_slices(scale_runs, slices, names, n_samples)
        by_scale.append(real)
        threshold_by_scale.append(threshold)
    probs = np.zeros((n_samples, n_classes))
    threshold_knn = []
    history_run = np.full(n_samples, -1)
    for position, run in enumerate(runs):
        real_mask = np.ones(n_samples, dtype=bool)
        real_mask[slices[position // n_scales]] = False
        probs[real_mask] += run["dynamics"].mean_probs[real_mask, :n_classes]
        if position % n_scales == 0:
            history_run[real_mask & (history_run < 0)] = position
            votes = compute_neighbor_votes(neighbor_ids, neighbor_sims, run["labels"],
                                           n_classes=n_classes + 1)
            threshold_knn.append(votes[slices[position // n_scales], n_classes])
    votes = compute_neighbor_votes(neighbor_ids, neighbor_sims, y, n_classes=n_classes)
    combined = {
        "scores_by_scale": by_scale,
        "threshold_scores_by_scale": threshold_by_scale,
        "votes": votes,
        "knn": votes[np.arange(n_samples), y],
        "threshold_knn": np.concatenate(threshold_knn),
        "head_probs": probs / probs.sum(axis=1, keepdims=True),
    }
    combined.update(_gather_histories(runs, history_run))
    return combined


def _scores_outside_slices(scale_runs, slices, names, n_samples):
    """Mean of each score over the runs where a sample is real; threshold samples' own scores."""
    totals = {name: np.zeros(n_samples) for name in names}
    weight = np.zeros(n_samples)
    threshold = {name: [] for name in names}
    for run, slice_ in zip(scale_runs, slices):
        real_mask = np.ones(n_samples, dtype=bool)
        real_mask[slice_] = False
        weight[real_mask] += 1
        for name in names:
            totals[name][real_mask] += run["scores"][name][real_mask]
            threshold[name].append(run["scores"][name][slice_])
    real = {name: totals[name] / weight for name in names}
    return real, {name: np.concatenate(threshold[name]) for name in names}


def _gather_histories(runs, history_run) -> dict:
    """(E, N) histories, each sample's column taken from run ``history_run[sample]``."""
    first = runs[0]["dynamics"]
    gathered = {
        "entropy_history": first.entropy_history.copy(),
        "agreement_history": first.agreement_history.copy(),
        "given_prob_history": first.given_prob_history.copy(),
    }
    for position in np.unique(history_run):
        if position <= 0:
            continue
        columns = history_run == position
        dynamics = runs[position]["dynamics"]
        for name in gathered:
            gathered[name][:, columns] = getattr(dynamics, name)[:, columns]
    return gathered
