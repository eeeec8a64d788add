import numpy as np
import pytest

from clipsei.engine.neighbors import (compute_neighbor_votes, find_conflicting_duplicates,
                               find_neighbors)


def _brute_force(embeddings, k):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_exact_matches_numpy_brute_force(rng):
    embeddings = rng.normal(size=(150, 16)).astype(np.float32)
    ids, sims = find_neighbors(embeddings, n_neighbors=7)
    expected_ids, expected_sims = _brute_force(embeddings, 7)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
    # ids may differ only where similarities tie
    differs = ids != expected_ids
    assert np.allclose(sims[differs], expected_sims[differs], atol=1e-5)
    assert (ids != np.arange(150)[:, None]).all()


def test_approximate_index_has_high_recall(rng):
    centres = rng.normal(size=(20, 16))
    embeddings = (centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16)))
    ids, _ = find_neighbors(embeddings, n_neighbors=5, exact_max_samples=1000, n_probe=16)
    exact_ids, _ = find_neighbors(embeddings, n_neighbors=5)
    recall = np.mean([np.intersect1d(a, b).size / 5 for a, b in zip(ids, exact_ids)])
    assert recall > 0.9
    assert (ids != np.arange(3000)[:, None]).all()


def test_self_excluded_by_id_with_exact_duplicates(rng):
    base = rng.normal(size=(20, 8))
    embeddings = np.vstack([base, base[:5]])  # rows 20..24 duplicate rows 0..4
    ids, sims = find_neighbors(embeddings, n_neighbors=3)
    assert (ids != np.arange(25)[:, None]).all()
    for row in range(5):
        assert ids[row, 0] == row + 20 and ids[row + 20, 0] == row
        assert sims[row, 0] == pytest.approx(1.0, abs=1e-5)


def test_groups_excluded_and_padded_when_too_few(rng):
    embeddings = rng.normal(size=(12, 4))
    groups = np.array([0] * 10 + [1, 2])
    ids, sims = find_neighbors(embeddings, n_neighbors=3, groups=groups)
    for row in range(12):
        valid = ids[row][ids[row] >= 0]
        assert (groups[valid] != groups[row]).all()
    # rows in group 0 have only 2 out-of-group candidates: third slot padded
    assert (ids[:10, 2] == -1).all() and np.isneginf(sims[:10, 2]).all()


def test_votes_and_duplicates():
    ids = np.array([[1, 2], [0, 2], [0, 1]])
    sims = np.array([[0.99, 0.5], [0.99, 0.2], [0.5, 0.2]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    votes = compute_neighbor_votes(ids, sims, labels, n_classes=2)
    np.testing.assert_allclose(votes.sum(axis=1), 1, rtol=1e-6)
    assert votes[0, 1] == pytest.approx(1.0)
    assert votes[2, 0] > votes[2, 1]
    pairs = find_conflicting_duplicates(ids, sims, labels, min_similarity=0.98)
    assert pairs[["i", "j"]].values.tolist() == [[0, 1]]


@pytest.mark.parametrize("k", [0, 10, 2.5])
def test_bad_k(rng, k):
    with pytest.raises(ValueError, match="n_neighbors must be an int"):
        find_neighbors(rng.normal(size=(10, 3)), n_neighbors=k)


def test_bad_groups(rng):
    with pytest.raises(ValueError, match="groups must have shape"):
        find_neighbors(rng.normal(size=(10, 3)), n_neighbors=2, groups=np.zeros(9))


def test_search_neighbors_meets_its_recall_and_reports_it():
    from clipsei.engine.neighbors import estimate_recall, search_neighbors

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(3000, 16)).astype(np.float32)
    exact_ids, _ = find_neighbors(embeddings, n_neighbors=5)
    assert estimate_recall(embeddings, exact_ids, n_queries=100) == 1.0
    approx_ids, _ = find_neighbors(embeddings, n_neighbors=5, exact_max_samples=1000, n_probe=1)
    low = estimate_recall(embeddings, approx_ids, n_queries=100)
    assert low < 0.95  # one of ~54 lists probed misses most neighbours of noise
    search = search_neighbors(embeddings, n_neighbors=5, exact_max_samples=1000, n_probe=1)
    assert search.recall >= 0.95 and search.n_probe > 1 and search.index == "ivf-flat"
    truth = np.mean([np.intersect1d(a, b).size / 5 for a, b in zip(search.neighbor_ids,
                                                                    exact_ids)])
    assert abs(truth - search.recall) < 0.05  # the sampled estimate tracks the full recall
    exact = search_neighbors(embeddings, n_neighbors=5)
    assert exact.as_dict() == {"index": "exact", "n_probe": None, "recall_at_k": 1.0}


def test_probes_are_chosen_on_the_sample_and_every_row_searched_once(monkeypatch):
    import clipsei.engine.features as features_module
    from clipsei.engine.neighbors import search_neighbors

    monkeypatch.setattr(features_module, "BLOCK_ROWS", 4000)  # rows searched 1000 at a time
    embeddings = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    reports = []
    search = search_neighbors(embeddings, n_neighbors=5, exact_max_samples=1000, n_probe=1,
                              progress=lambda *report: reports.append(report))
    assert search.n_probe > 2  # at least two doublings
    done = [report[1] for report in reports]
    assert done == sorted(done) and done[-1] == 3000 and done.count(3000) == 1  # one pass


def test_inverted_file_probing_every_list_is_exact_in_any_block_size(monkeypatch):
    import clipsei.engine.features as features_module

    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(1500, 12)).astype(np.float32)
    exact_ids, exact_sims = find_neighbors(embeddings, n_neighbors=6)
    n_lists = int(np.sqrt(1500))
    ids, sims = find_neighbors(embeddings, n_neighbors=6, exact_max_samples=100, n_probe=n_lists)
    monkeypatch.setattr(features_module, "BLOCK_ROWS", 40)  # lists scanned 10 rows at a time
    small_ids, small_sims = find_neighbors(embeddings, n_neighbors=6, exact_max_samples=100,
                                           n_probe=n_lists)
    for found_ids, found_sims in [(ids, sims), (small_ids, small_sims)]:
        np.testing.assert_allclose(found_sims, exact_sims, atol=1e-5)
        differs = found_ids != exact_ids  # ids may differ only where similarities tie
        assert np.allclose(found_sims[differs], exact_sims[differs], atol=1e-5)


def test_inverted_file_excludes_groups_and_pads_exhausted_lists(rng):
    embeddings = rng.normal(size=(400, 8)).astype(np.float32)
    groups = np.arange(400) // 100  # four groups of 100
    ids, sims = find_neighbors(embeddings, n_neighbors=4, groups=groups, exact_max_samples=50,
                               n_probe=1)
    valid = ids >= 0
    assert (groups[np.maximum(ids, 0)] != groups[:, None])[valid].all()
    assert (ids != np.arange(400)[:, None]).all()
    assert np.isneginf(sims[~valid]).all() and np.isfinite(sims[valid]).all()
    assert (np.diff(np.where(valid, sims, -2.0), axis=1) <= 1e-6).all()  # best first


def test_detector_reports_its_neighbour_search(blobs):
    from clipsei.engine.detect import find_label_issues

    issues = find_label_issues(blobs.embeddings, blobs.labels, method="aum", n_epochs=2)
    assert issues.attrs["neighbors"] == {"index": "exact", "n_probe": None, "recall_at_k": 1.0}


def test_inverted_file_reads_streamed_rows_as_it_reads_dense_ones(tmp_path):
    from clipsei.engine.features import FeatureRows, column_moments
    from clipsei.engine.neighbors import search_neighbors

    embeddings = np.random.default_rng(2).normal(size=(2000, 16)).astype(np.float16)
    np.save(tmp_path / "rows.npy", embeddings)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    mean, spread = column_moments(mapped)
    searches = [search_neighbors(FeatureRows(mapped, mean, spread, max_dense_bytes=limit),
                                 n_neighbors=5, exact_max_samples=500)
                for limit in (None, 0)]  # in memory; converted a block at a time
    assert searches[0].index == searches[1].index == "ivf-flat"
    np.testing.assert_array_equal(searches[0].neighbor_ids, searches[1].neighbor_ids)
    np.testing.assert_array_equal(searches[0].neighbor_sims, searches[1].neighbor_sims)
