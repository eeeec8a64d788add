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
    assert found.as_frame().shape == (len(x), 4)


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


def _with_foreign_group(seed=0, n_foreign=12):
    """Four blobs of 30 plus a tight group of ``n_foreign`` rows (more than k) far from all."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 30)
    x = centres[labels] + 0.5 * rng.normal(size=(120, 16))
    foreign = 4 * rng.normal(size=16) + 0.3 * rng.normal(size=(n_foreign, 16))
    return np.vstack([x, foreign]), np.concatenate([labels, rng.integers(0, 4, n_foreign)])


def test_a_foreign_group_larger_than_k_is_found_by_the_centroid_signal():
    x, labels = _with_foreign_group()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ids, sims = find_neighbors(unit, n_neighbors=8)
    local_only = find_outliers(ids, sims)
    assert not local_only.is_outlier[120:].any()  # each other's neighbours: masked
    found = find_outliers(ids, sims, embeddings=x, labels=labels)
    assert found.is_outlier[120:].all() and not found.is_outlier[:120].any()
    assert found.outlier_score[120:].max() < np.median(found.outlier_score[:120])
    assert found.outlier_score[120:].max() <= 0.25  # the lowest quarter on both signals
    assert ((found.outlier_score > 0) & (found.outlier_score <= 1)).all()
    assert np.isfinite(found.centroid_similarity).all()


def test_centroid_signal_flags_nothing_in_clean_blobs_and_is_block_invariant():
    from clipsei.engine.outliers import compute_centroid_similarity

    x, labels = _with_foreign_group(1, n_foreign=0)
    ids, sims = find_neighbors(x / np.linalg.norm(x, axis=1, keepdims=True), n_neighbors=8)
    assert not find_outliers(ids, sims, embeddings=x, labels=labels).is_outlier.any()
    whole = compute_centroid_similarity(x, labels)
    np.testing.assert_allclose(compute_centroid_similarity(x, labels, block=7), whole,
                               atol=1e-9)
    assert (whole <= 1 + 1e-9).all()


def test_errors():
    with pytest.raises(ValueError, match="together"):
        find_outliers(np.zeros((3, 1), int), np.zeros((3, 1)), embeddings=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="labels must have 3 rows"):
        find_outliers(np.zeros((3, 1), int), np.zeros((3, 1)), embeddings=np.zeros((3, 2)),
                      labels=[0, 1])
    with pytest.raises(ValueError, match="z_cutoff"):
        find_outliers(np.zeros((3, 1), int), np.zeros((3, 1)), z_cutoff=0)
