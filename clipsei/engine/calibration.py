"""Calibrated error probabilities: P(the given label is wrong), without a floor on the count.

Held-out class probabilities never depend on a sample's own label, so the probability they
give a *wrong* label can be simulated exactly: relabel every sample to another class, drawn
as the noise model's transitions say a label of its class goes wrong (confident learning's
``T``: cat -> dog more often than cat -> truck), and read off the probability of that label.
These pseudo-errors show what the held-out given-label probability ``z`` of a mislabeled
sample looks like (``f1``); the real samples show its mixture ``f = (1 - pi) f0 + pi f1``
over clean (``f0``) and mislabeled ones. Mixture proportion estimation (Scott et al. 2013;
Elkan and Noto 2008) then gives the error rate ``pi <= min_t F(t) / F1(t)``, an upper bound
that is tight where low ``z`` holds no clean sample, and Bayes' rule the posterior
``P(wrong | z) = pi f1(z) / f(z)``, with the density ratio from an isotonic (monotone)
classifier of real against pseudo-error ``z``.
No count of confident learning enters, so there is no floor: on a clean set ``pi`` -> 0.
Errors unlike the pseudo-errors (ambiguous images, one class systematically given another's
label) are under-counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the tail cutoffs t of the rate estimate: pseudo-error quantiles up to their median
TAIL_QUANTILES = np.linspace(0.02, 0.5, 25)


@dataclass(frozen=True)
class Calibration:
    """error_probs : (N,) calibrated P(given label wrong); error_rate : the estimated rate
    ``pi`` (the mean of ``error_probs`` up to clipping); n_pseudo : pseudo-errors drawn."""

    error_probs: np.ndarray
    error_rate: float
    n_pseudo: int


def draw_pseudo_error_probs(class_probs, labels, rng, *, transitions=None,
                            n_draws: int = 2) -> np.ndarray:
    """(n_draws * N,) the held-out probability of a wrong label.

    Each sample is relabelled ``n_draws`` times to another class: uniformly, or with (K, K)
    ``transitions`` ``T[c, g] = P(given g | true c)`` along row ``y`` of ``T`` without its
    diagonal (uniformly where it has no off-diagonal mass), so the pseudo-errors go wrong
    as the noise model says labels do. Only the direction is taken from ``T``: its rates
    count the heads' own mistakes as noise. class_probs : (N, K); labels : (N,).
    """
    class_probs = np.asarray(class_probs, dtype=np.float64)
    labels = np.asarray(labels)
    n_samples, n_classes = class_probs.shape
    weights = (np.ones((n_classes, n_classes)) if transitions is None
               else np.array(transitions, dtype=np.float64))
    np.fill_diagonal(weights, 0.0)
    empty = weights.sum(axis=1) <= 0
    weights[empty] = 1.0 - np.eye(n_classes)[empty]
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    rows = np.tile(np.arange(n_samples), n_draws)
    draws = rng.random(rows.size)[:, None]
    wrong = np.minimum((cumulative[labels[rows]] < draws).sum(axis=1), n_classes - 1)
    return class_probs[rows, wrong]


def estimate_rate_from_tails(label_probs, pseudo_probs) -> float:
    """The error rate ``pi = min_t (k(t) + sqrt(k(t) + 1)) / (N F1(t))``.

    Each term bounds the rate from above at a cutoff ``t`` among :data:`TAIL_QUANTILES` of
    the pseudo-errors' ``pseudo_probs`` (``F1(t)`` the share of them at or below ``t``),
    ``k(t)`` the number of the N real ``label_probs`` at or below. The ``sqrt`` (about one
    standard error of ``k``) keeps the minimum from picking a tail that holds no real sample
    by chance (Scott 2015); it also sets the resolution, ``2 / N`` on a clean set."""
    label_probs = np.sort(np.asarray(label_probs, dtype=np.float64))
    pseudo_probs = np.sort(np.asarray(pseudo_probs, dtype=np.float64))
    cutoffs = np.quantile(pseudo_probs, TAIL_QUANTILES)
    below = np.searchsorted(label_probs, cutoffs, side="right")
    pseudo = np.searchsorted(pseudo_probs, cutoffs, side="right") / pseudo_probs.size
    bounds = (below + np.sqrt(below + 1.0)) / (label_probs.size * pseudo)
    return float(np.clip(bounds.min(), 0.0, 1.0))


def compute_posterior(label_probs, pseudo_probs, error_rate: float) -> np.ndarray:
    """(N,) ``P(wrong | z) = pi f1(z) / f(z)`` at the real ``label_probs`` (N,), the density
    ratio ``f1 / f`` from an isotonic fit of "is a pseudo-error" on ``z`` (non-increasing),
    weighted so that both groups count equally; clipped to [0, 1]."""
    from sklearn.isotonic import IsotonicRegression

    label_probs = np.asarray(label_probs, dtype=np.float64)
    pseudo_probs = np.asarray(pseudo_probs, dtype=np.float64)
    if error_rate <= 0:
        return np.zeros(label_probs.size)
    values = np.concatenate([label_probs, pseudo_probs])
    targets = np.r_[np.zeros(label_probs.size), np.ones(pseudo_probs.size)]
    weights = np.r_[np.full(label_probs.size, 1.0 / label_probs.size),
                    np.full(pseudo_probs.size, 1.0 / pseudo_probs.size)]
    share = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0,
                               out_of_bounds="clip").fit(values, targets, sample_weight=weights)
    pseudo_share = share.predict(label_probs)
    ratio = pseudo_share / np.maximum(1.0 - pseudo_share, 1e-12)  # f1 / f
    return np.clip(error_rate * ratio, 0.0, 1.0)


def calibrate_error_probabilities(class_probs, labels, *, rng, transitions=None,
                                  n_draws: int = 2) -> Calibration:
    """Calibrated (N,) error probabilities from held-out ``class_probs`` (N, K) (rows that
    never saw their own label) and the given ``labels`` (N,); the pseudo-errors' wrong
    labels follow the noise model's ``transitions`` (K, K) where given (see the module
    docstring)."""
    class_probs = np.asarray(class_probs, dtype=np.float64)
    labels = np.asarray(labels)
    label_probs = class_probs[np.arange(labels.size), labels]
    pseudo = draw_pseudo_error_probs(class_probs, labels, rng, transitions=transitions,
                                     n_draws=n_draws)
    rate = estimate_rate_from_tails(label_probs, pseudo)
    return Calibration(compute_posterior(label_probs, pseudo, rate), rate, int(pseudo.size))
