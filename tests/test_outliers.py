import numpy as np
import pytest

from clipsei._robust import robust_z
from clipsei.engine.neighbors import find_neighbors
from clipsei.engine.outliers import find_outliers


def _blobs(seed=0, n=120, dim=16):
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(4, dim))
    x = centres[rng.integers(0, 4, n)] + 0.3 * rng.normal(size=(n, dim))
    return x, rng


def test_a_point_far_from_every_blob_is_the_outlier():
    x, rng = _blobs()
    x[7] = 5 * rng.normal(size=16)  # far from all four centres
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ids, sims = find_neighbors(x, n_neighbors=8)
    found = find_outliers(ids, sims)
    assert np.argmin(found.outlier_score) == 7
    assert found.is_outlier[7] and found.is_outlier.sum() <= 3
    assert ((found.outlier_score > 0) & (found.outlier_score <= 1)).all()
    assert found.as_frame().shape == (len(x), 3)


def test_no_outlier_in_tight_blobs():
    x, _ = _blobs(3)
    ids, sims = find_neighbors(x / np.linalg.norm(x, axis=1, keepdims=True), n_neighbors=8)
    assert find_outliers(ids, sims).is_outlier.sum() <= 1


def test_rows_without_neighbours_are_not_flagged():
    ids = np.array([[1], [0], [-1]])
    sims = np.array([[0.9], [0.9], [-np.inf]])
    found = find_outliers(ids, sims)
    assert np.isnan(found.outlier_distance[2]) and not found.is_outlier[2]


def test_robust_z_handles_constant_values():
    assert (robust_z(np.ones(5)) == 0).all()
    z = robust_z(np.array([1.0, 1, 1, 1, 9]))
    assert z[-1] > 3.5 and (z[:4] == 0).all()


def test_errors():
    with pytest.raises(ValueError, match="z_cutoff"):
        find_outliers(np.zeros((3, 1), int), np.zeros((3, 1)), z_cutoff=0)
