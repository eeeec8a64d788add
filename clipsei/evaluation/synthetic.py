"""Synthetic embeddings with planted label flips, for tests, demos and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_random_state


@dataclass(frozen=True)
class NoisyBlobs:
    """Clustered embeddings whose labels were partly flipped.

    Attributes
    ----------
    embeddings : (N, D) float32, L2-normalised.
    labels : (N,) int64, the given (noisy) labels.
    true_labels : (N,) int64, the labels before flipping.
    is_flipped : (N,) bool, ``labels != true_labels``.
    class_embeddings : (K, D) float32, L2-normalised cluster centres (a stand-in for
        class-prompt text embeddings).
    """

    embeddings: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    is_flipped: np.ndarray
    class_embeddings: np.ndarray


def make_noisy_blobs(n_samples: int = 200, *, n_classes: int = 4, n_features: int = 32,
                     noise_rate: float = 0.1, cluster_std: float = 0.35,
                     random_state=None) -> NoisyBlobs:
    """Draw ``n_samples`` points around ``n_classes`` random unit centres and flip labels.

    Exactly ``round(noise_rate * n_samples)`` labels are flipped, each to a uniformly
    chosen other class. ``cluster_std`` is the per-dimension spread relative to unit-norm
    centres; at the default the classes are well separated.
    """
    if not 0 <= noise_rate < 1:
        raise ValueError(f"noise_rate must be in [0, 1); got {noise_rate}")
    if n_classes < 2 or n_samples < n_classes:
        raise ValueError(
            f"need n_classes >= 2 and n_samples >= n_classes; got {n_samples=}, {n_classes=}"
        )
    rng = check_random_state(random_state)
    centres = rng.normal(size=(n_classes, n_features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    true_labels = np.arange(n_samples) % n_classes
    rng.shuffle(true_labels)
    points = centres[true_labels] + rng.normal(
        scale=cluster_std / np.sqrt(n_features), size=(n_samples, n_features)
    )
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = true_labels.copy()
    flipped = rng.choice(n_samples, size=int(round(noise_rate * n_samples)), replace=False)
    offsets = rng.integers(1, n_classes, size=flipped.size)
    labels[flipped] = (true_labels[flipped] + offsets) % n_classes
    return NoisyBlobs(
        embeddings=points.astype(np.float32),
        labels=labels.astype(np.int64),
        true_labels=true_labels.astype(np.int64),
        is_flipped=labels != true_labels,
        class_embeddings=centres.astype(np.float32),
    )
