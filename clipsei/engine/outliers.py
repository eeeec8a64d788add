"""Outliers: samples unlike the rest of the dataset, from the neighbour lists a scan has.

A sample's distance is its mean cosine distance (1 - cosine) to its k nearest neighbours.
``outlier_score`` is the share of the dataset at least as far from its neighbours, in [0, 1]
(lower = more unusual, like ``label_score``). ``is_outlier`` uses a robust z-score of the
log distance (Iglewicz and Hoaglin's modified z: 0.6745 (x - median) / MAD) above
:data:`OUTLIER_Z`, a rule that does not assume any share of outliers: a set without
outliers flags none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._robust import robust_z

OUTLIER_Z = 3.5  # Iglewicz & Hoaglin's cutoff for the modified z-score


@dataclass(frozen=True)
class Outliers:
    """Per sample (N,): ``outlier_distance`` (mean cosine distance to the neighbours, NaN
    without any), ``outlier_score`` in [0, 1] (lower = more unusual) and ``is_outlier``."""

    outlier_distance: np.ndarray
    outlier_score: np.ndarray
    is_outlier: np.ndarray

    def as_frame(self) -> pd.DataFrame:
        """The fields as columns of a DataFrame, one row per sample."""
        return pd.DataFrame({name: getattr(self, name) for name in self.__dataclass_fields__})


def find_outliers(neighbor_ids, neighbor_sims, *, z_cutoff: float = OUTLIER_Z) -> Outliers:
    """Outlier scores and flags from (N, k) neighbour lists (-1 = none) and cosines."""
    neighbor_ids = np.asarray(neighbor_ids)
    neighbor_sims = np.asarray(neighbor_sims, dtype=np.float64)
    if neighbor_ids.ndim != 2 or neighbor_ids.shape != neighbor_sims.shape:
        raise ValueError("neighbor_ids and neighbor_sims must be (N, k) arrays of one shape; "
                         f"got {neighbor_ids.shape} and {neighbor_sims.shape}")
    if not float(z_cutoff) > 0:
        raise ValueError(f"z_cutoff must be > 0; got {z_cutoff}")
    valid = neighbor_ids >= 0
    distances = np.where(valid, 1.0 - np.clip(np.where(valid, neighbor_sims, 1.0), -1, 1), 0.0)
    n_valid = valid.sum(axis=1)
    mean_distance = np.where(n_valid > 0, distances.sum(axis=1) / np.maximum(n_valid, 1), np.nan)
    finite = np.isfinite(mean_distance)
    score = np.ones(mean_distance.size)
    if finite.any():
        ordered = np.sort(mean_distance[finite])
        # share of samples at least as far: 1/n for the farthest, 1 for the nearest
        farther = ordered.size - np.searchsorted(ordered, mean_distance[finite])
        score[finite] = farther / ordered.size
    z = robust_z(np.log(np.maximum(mean_distance, 1e-6)))
    return Outliers(outlier_distance=mean_distance.astype(np.float32),
                    outlier_score=score.astype(np.float32),
                    is_outlier=np.nan_to_num(z, nan=0.0) > float(z_cutoff))
