"""find_caption_issues: planted caption swaps on synthetic paired embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from clipsei import find_caption_issues


def _pairs(n=200, n_clusters=8, dim=32, n_swaps=10, seed=0):
    """Images and captions of n pairs around shared cluster centres; ``n_swaps`` captions
    moved (cyclically) between pairs of different clusters. Returns (images, texts, clusters,
    swapped rows)."""
    rng = np.random.default_rng(seed)
    clusters = np.arange(n) % n_clusters
    centres = rng.normal(size=(n_clusters, dim))
    images = centres[clusters] + 0.6 * rng.normal(size=(n, dim))
    texts = centres[clusters] + 0.6 * rng.normal(size=(n, dim))
    members = [rng.permutation(np.flatnonzero(clusters == c)) for c in range(n_clusters)]
    swapped = np.array([members[j % n_clusters][j // n_clusters] for j in range(n_swaps)])
    texts[swapped] = texts[np.roll(swapped, 1)]  # neighbouring entries lie in other clusters
    return images, texts, clusters, swapped


def test_planted_swaps_rank_on_top_and_get_a_caption_of_their_own_cluster():
    images, texts, clusters, swapped = _pairs()
    issues = find_caption_issues(images, texts)
    top = np.argsort(issues["caption_score"].to_numpy())[: swapped.size]
    assert set(top) == set(swapped)
    flagged = np.flatnonzero(issues["is_caption_issue"])
    assert set(flagged) <= set(swapped) and len(flagged) >= 3  # the count is an estimate
    suggested = issues["suggested_caption"].to_numpy()[swapped]
    assert (clusters[suggested] == clusters[swapped]).all()
    assert not np.isin(suggested, swapped).any()  # a swapped-in caption is never suggested


def test_table_shape_values_and_determinism():
    images, texts, _, _ = _pairs()
    issues = find_caption_issues(images, texts, n_neighbors=5)
    assert len(issues) == 200 and issues.index.tolist() == list(range(200))
    assert issues["caption_score"].between(0, 1).all()
    assert issues["random_pair_quantile"].between(0, 1).all()
    assert sorted(issues["rank"]) == list(range(1, 201))
    assert np.isfinite(issues[["pair_similarity", "image_neighbor_agreement",
                               "text_neighbor_agreement", "suggested_similarity"]]).all().all()
    assert (issues["suggested_caption"] != np.arange(200)).all()
    assert issues.attrs["n_neighbors"] == 5 and 0 < issues.attrs["estimated_mismatch_rate"] < 0.2
    again = find_caption_issues(images, texts, n_neighbors=5)
    assert issues.equals(again)


def test_clean_pairs_flag_nothing_and_say_why():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(150, 16))
    texts = images + 0.5 * rng.normal(size=(150, 16))
    issues = find_caption_issues(images, texts)
    assert not issues["is_caption_issue"].any()
    assert issues.attrs["cutoff"] is None and "nothing flagged" in issues.attrs["warnings"][0]


def test_pair_similarity_is_the_cosine_of_each_pair():
    rng = np.random.default_rng(2)
    images, texts = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    issues = find_caption_issues(images, texts, n_neighbors=3)
    expected = (images * texts).sum(1) / np.linalg.norm(images, axis=1) / np.linalg.norm(
        texts, axis=1)
    np.testing.assert_allclose(issues["pair_similarity"], expected, rtol=1e-5, atol=1e-6)


def test_tiny_set_lowers_n_neighbors_with_a_warning():
    rng = np.random.default_rng(3)
    with pytest.warns(UserWarning, match="using 4"):
        issues = find_caption_issues(rng.normal(size=(5, 8)), rng.normal(size=(5, 8)))
    assert issues.attrs["n_neighbors"] == 4


@pytest.mark.parametrize("images, texts, options, error, match", [
    (np.ones((10, 4)), np.ones((9, 4)), {}, ValueError, "10 images and 9 captions"),
    (np.ones((10, 4)), np.ones((10, 5)), {}, ValueError, "same D"),
    (np.ones((2, 4)), np.ones((2, 4)), {}, ValueError, "at least 3 pairs"),
    (np.ones((10, 4)), np.ones((10, 4)), {"n_neighbors": 0}, ValueError, "n_neighbors"),
    (np.zeros((10, 4)), np.ones((10, 4)), {}, ValueError, "image_embeddings must have non-zero"),
    (np.ones((10, 4)), np.full((10, 4), np.nan), {}, ValueError, "text_embeddings must be finite"),
    (np.array([["a"]]), np.ones((1, 1)), {}, TypeError, "image_embeddings must be a numeric"),
])
def test_bad_input_is_one_clear_error(images, texts, options, error, match):
    with pytest.raises(error, match=match):
        find_caption_issues(images, texts, **options)


def test_clusters_of_weaker_alignment_are_not_flagged_as_mismatches():
    """Clean pairs whose captions match their images less well in some clusters (a concept the
    model knows less well) form a low mode of their own; they are not random pairings."""
    rng = np.random.default_rng(4)
    n, n_clusters, dim = 200, 8, 32
    clusters = np.arange(n) % n_clusters
    centres = rng.normal(size=(n_clusters, dim))
    images = centres[clusters] + 0.5 * rng.normal(size=(n, dim))
    caption_noise = np.where(clusters < 4, 0.3, 1.2)[:, None]
    texts = centres[clusters] + caption_noise * rng.normal(size=(n, dim))
    issues = find_caption_issues(images, texts)
    assert issues["is_caption_issue"].sum() <= 4


def test_pairs_no_better_than_random_pairings_flag_nothing_with_a_warning():
    rng = np.random.default_rng(5)
    clusters = np.arange(200) % 8
    centres = rng.normal(size=(8, 32))
    images = centres[clusters] + 0.5 * rng.normal(size=(200, 32))
    texts = rng.normal(size=(200, 32))  # captions unrelated to their images
    issues = find_caption_issues(images, texts)
    assert issues.attrs["estimated_mismatch_rate"] >= 0.5
    assert not issues["is_caption_issue"].any()
    assert "no better than random pairings" in issues.attrs["warnings"][0]
