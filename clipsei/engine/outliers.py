"""Outliers: samples unlike the rest of the dataset, from what a scan already has.

Two signals, neither needing a second neighbour search:

- local: the mean cosine distance (1 - cosine) to the k neighbours the scan listed. It finds
  a lone sample far from everything, but not a tight group of k or more foreign samples,
  which are each other's neighbours;
- global (with ``embeddings`` and ``labels``): the cosine to the nearest class centroid, in
  the standardised space the detector searches (each dimension centred and scaled, rows
  unit). A group of foreign samples is far from every class centre however many there are.

``outlier_score`` is the share of the dataset at least as unusual on the more unusual of the
two (each taken as a rank), in (0, 1]: lower = more unusual, like ``label_score``.
``is_outlier``: either signal beyond :data:`OUTLIER_Z` on Iglewicz and Hoaglin's modified
z-score (0.6745 (x - median) / MAD) of the log of either distance (1 - cosine): a cosine
near 1 leaves little room above, so distances are judged on a log scale. The rule assumes
no share of outliers: a set without any flags none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._robust import robust_z

OUTLIER_Z = 3.5  # Iglewicz & Hoaglin's cutoff for the modified z-score
_BLOCK = 65536  # rows standardised at a time: no (N, D) copy of a large set


@dataclass(frozen=True)
class Outliers:
    """Per sample (N,): ``outlier_distance`` (mean cosine distance to the neighbours, NaN
    without any), ``centroid_similarity`` (cosine to the nearest class centroid in the
    standardised space, NaN without embeddings), ``outlier_score`` in (0, 1] (lower = more
    unusual) and ``is_outlier``."""

    outlier_distance: np.ndarray
    centroid_similarity: np.ndarray
    outlier_score: np.ndarray
    is_outlier: np.ndarray

    def as_frame(self) -> pd.DataFrame:
        """The fields as columns of a DataFrame, one row per sample."""
        return pd.DataFrame({name: getattr(self, name) for name in self.__dataclass_fields__})


def find_outliers(neighbor_ids, neighbor_sims, *, embeddings=None, labels=None,
                  z_cutoff: float = OUTLIER_Z) -> Outliers:
    """Outlier scores and flags.

    neighbor_ids, neighbor_sims: (N, k) neighbour lists (-1 = none) and their cosines.
    embeddings: (N, D) the features the neighbours were searched on (before standardising),
        and labels: (N,) the given labels; with both, the nearest-centroid signal is added.
    """
    neighbor_ids = np.asarray(neighbor_ids)
    neighbor_sims = np.asarray(neighbor_sims, dtype=np.float64)
    if neighbor_ids.ndim != 2 or neighbor_ids.shape != neighbor_sims.shape:
        raise ValueError("neighbor_ids and neighbor_sims must be (N, k) arrays of one shape; "
                         f"got {neighbor_ids.shape} and {neighbor_sims.shape}")
    if not float(z_cutoff) > 0:
        raise ValueError(f"z_cutoff must be > 0; got {z_cutoff}")
    if (embeddings is None) != (labels is None):
        raise ValueError("embeddings and labels must be given together")
    n_samples = neighbor_ids.shape[0]
    for name, values in (("embeddings", embeddings), ("labels", labels)):
        if values is not None and len(values) != n_samples:
            raise ValueError(f"{name} must have {n_samples} rows; got {len(values)}")
    mean_distance = _mean_distance(neighbor_ids, neighbor_sims)
    z_distance = robust_z(np.log(np.maximum(mean_distance, 1e-6)))
    flagged = np.nan_to_num(z_distance, nan=0.0) > float(z_cutoff)
    score = _share_as_unusual(-mean_distance)
    centroid = np.full(n_samples, np.nan)
    if embeddings is not None and n_samples:
        centroid = compute_centroid_similarity(embeddings, labels)
        z_centroid = robust_z(np.log(np.maximum(1.0 - centroid, 1e-6)))
        flagged |= np.nan_to_num(z_centroid, nan=0.0) > float(z_cutoff)
        score = _share_as_unusual(np.fmin(score, _share_as_unusual(centroid)))
    return Outliers(outlier_distance=mean_distance.astype(np.float32),
                    centroid_similarity=centroid.astype(np.float32),
                    outlier_score=score.astype(np.float32), is_outlier=flagged)


def compute_centroid_similarity(embeddings, labels, *, block: int = _BLOCK) -> np.ndarray:
    """(N,) cosine of each row to the nearest class centroid (mean of the class's unit rows),
    after centring and scaling each dimension over the whole set; rows are read in blocks."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D); got shape {embeddings.shape}")
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    mean, scale = _column_stats(embeddings, block)
    sums = np.zeros((classes.size, embeddings.shape[1]))
    for start in range(0, len(embeddings), block):
        rows = _unit_standardised(embeddings[start:start + block], mean, scale)
        block_codes = codes[start:start + block]
        sums += (block_codes == np.arange(classes.size)[:, None]).astype(rows.dtype) @ rows
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    similarity = np.empty(len(embeddings))
    for start in range(0, len(embeddings), block):
        rows = _unit_standardised(embeddings[start:start + block], mean, scale)
        similarity[start:start + block] = (rows @ centroids.T).max(axis=1)
    return similarity


def _column_stats(embeddings, block):
    total = np.zeros(embeddings.shape[1])
    squares = np.zeros(embeddings.shape[1])
    for start in range(0, len(embeddings), block):
        rows = np.asarray(embeddings[start:start + block], dtype=np.float64)
        total += rows.sum(axis=0)
        squares += (rows ** 2).sum(axis=0)
    mean = total / len(embeddings)
    spread = np.sqrt(np.maximum(squares / len(embeddings) - mean ** 2, 0.0))
    return mean, np.where(spread > 1e-12 * np.maximum(np.abs(mean), 1.0), spread, 1.0)


def _unit_standardised(rows, mean, scale):
    # float32 rows (the statistics stay float64): half the memory and time of float64
    rows = (np.asarray(rows, dtype=np.float32) - mean.astype(np.float32)) / scale.astype(
        np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _mean_distance(neighbor_ids, neighbor_sims):
    valid = neighbor_ids >= 0
    distances = np.where(valid, 1.0 - np.clip(np.where(valid, neighbor_sims, 1.0), -1, 1), 0.0)
    n_valid = valid.sum(axis=1)
    return np.where(n_valid > 0, distances.sum(axis=1) / np.maximum(n_valid, 1), np.nan)


def _share_as_unusual(values) -> np.ndarray:
    """(N,) share of the finite ``values`` at most each one (lower = more unusual): 1/n for
    the lowest, 1 for the highest; NaN -> 1."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    share = np.ones(values.size)
    if finite.any():
        ordered = np.sort(values[finite])
        share[finite] = np.searchsorted(ordered, values[finite], side="right") / ordered.size
    return share
