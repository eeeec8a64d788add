import numpy as np
import pytest

from clipsei.engine.duplicates import find_duplicates
from clipsei.engine.neighbors import find_neighbors


def _blobs(seed=0, n=60, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    x = centres[rng.integers(0, 3, n)] + 0.6 * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng


def test_near_duplicate_set_is_one_group_and_exact_hashes_join():
    x, rng = _blobs()
    x[10] = x[3] + 0.01 * rng.normal(size=16)   # a chain 3 - 10 - 20 of near copies
    x[20] = x[10] + 0.01 * rng.normal(size=16)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    hashes = [f"h{i}" for i in range(len(x))]
    hashes[40] = hashes[50] = "same-bytes"      # identical files, whatever their embeddings
    ids, sims = find_neighbors(x, n_neighbors=5)
    dup = find_duplicates(ids, sims, content_hashes=hashes, embeddings=x)
    assert dup.duplicate_group[3] == dup.duplicate_group[10] == dup.duplicate_group[20] >= 0
    assert dup.duplicate_group[40] == dup.duplicate_group[50] >= 0
    assert dup.duplicate_group[40] != dup.duplicate_group[3]
    assert set(np.flatnonzero(dup.is_duplicate)) == {3, 10, 20, 40, 50}
    assert set(np.flatnonzero(dup.is_exact_duplicate)) == {40, 50}
    assert set(np.flatnonzero(dup.is_near_duplicate)) == {3, 10, 20}
    assert sorted(set(dup.duplicate_group[dup.is_duplicate])) == [0, 1]
    assert (dup.duplicate_group[~dup.is_duplicate] == -1).all()
    assert not dup.is_leakage.any()


def test_leakage_only_where_a_set_crosses_splits():
    x, _ = _blobs(1)
    x[5] = x[2]
    x[30] = x[31]
    splits = np.array(["train"] * len(x), dtype=object)
    splits[5] = "test"
    ids, sims = find_neighbors(x, n_neighbors=4)
    dup = find_duplicates(ids, sims, splits=splits)
    assert set(np.flatnonzero(dup.is_leakage)) == {2, 5}
    assert dup.is_duplicate[[30, 31]].all()
    frame = dup.as_frame()
    assert list(frame.columns[:2]) == ["duplicate_group", "is_duplicate"]


def test_no_duplicates_in_distinct_data():
    x, _ = _blobs(2)
    ids, sims = find_neighbors(x, n_neighbors=5)
    dup = find_duplicates(ids, sims, content_hashes=[f"{i}" for i in range(len(x))])
    assert not dup.is_duplicate.any() and (dup.duplicate_group == -1).all()


def test_errors():
    ids, sims = np.zeros((4, 2), int), np.zeros((4, 2))
    with pytest.raises(ValueError, match="min_similarity"):
        find_duplicates(ids, sims, min_similarity=1.5)
    with pytest.raises(ValueError, match="splits must have 4"):
        find_duplicates(ids, sims, splits=["a"])
    with pytest.raises(ValueError, match="one shape"):
        find_duplicates(ids, sims[:, :1])
