"""Robust z-scores, shared by the outlier and image-property rules."""

from __future__ import annotations

import numpy as np


def robust_z(values) -> np.ndarray:
    """Modified z-score 0.6745 (x - median) / MAD of (N,) values (NaN stays NaN).

    Where the MAD is 0 (over half the values equal) the mean absolute deviation times
    1.2533 stands in for it; where that is 0 too, every z is 0.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    centre = np.median(finite)
    mad = np.median(np.abs(finite - centre)) / 0.6745
    if mad <= 0:
        mad = np.mean(np.abs(finite - centre)) * 1.2533
    if mad <= 0:
        return np.where(np.isfinite(values), 0.0, np.nan)
    return (values - centre) / mad
