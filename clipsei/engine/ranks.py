"""Ranks and percentile ranks of scores (lower score = more likely mislabeled)."""

from __future__ import annotations

import numpy as np


def rank_by_score(label_scores) -> np.ndarray:
    """(N,) int64 1-based rank of each sample, 1 = lowest score; ties by row order."""
    order = np.argsort(np.asarray(label_scores), kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(1, order.size + 1)
    return ranks


def percentile_of(reference, values) -> np.ndarray:
    """Share of ``reference`` below each of ``values`` (ties count half), in [0, 1]."""
    ordered = np.sort(np.asarray(reference, dtype=np.float64))
    below = np.searchsorted(ordered, values, side="left")
    at_or_below = np.searchsorted(ordered, values, side="right")
    return (below + at_or_below) / (2.0 * ordered.size)


def fuse_percentiles(components, weights) -> np.ndarray:
    """(N,) weighted mean of each (N,) component's percentile among its own values."""
    return np.average([percentile_of(values, values) for values in components], axis=0,
                      weights=weights)
