"""Image-caption pairs whose two sides disagree, scored against their neighbours in both modalities.

In the spirit of LEMoN (Zhang et al., ICML 2025), three signals per pair ``i``, all cosines in a
shared image-text space:

- ``pair_similarity``: the pair's own image-text cosine, ``cos(x_i, t_i)``;
- ``image_neighbor_agreement``: how much caption ``t_i`` resembles the captions of the image's
  nearest image-neighbours (a weighted mean of ``cos(t_i, t_j)``, j among ``x_i``'s neighbours);
- ``text_neighbor_agreement``: how much image ``x_i`` resembles the images of the caption's
  nearest text-neighbours (a weighted mean of ``cos(x_i, x_j)``, j among ``t_i``'s neighbours).

Each signal is put on one scale (median 0, robust spread 1) and the three are averaged with equal
weights, so no weight is tuned to any data set. ``caption_score`` is the normal CDF of the robust
z-score of that mean: in [0, 1], rank-preserving, lower = more likely mismatched.

The cutoff is a count. Re-pairing every image with a random other pair's caption gives the
fused signal of known mismatches (from the same neighbour lists, no new search); if clean pairs
rarely score below the median of those, the share of mismatched pairs is about twice the share
of observed pairs below it. That many lowest-scoring pairs are flagged (none when the estimate is
0, and none with a warning when it is 0.5 or more: then the pairs look no better than random
pairings, and the embeddings show no image-text alignment to judge them by). The model of a
mismatch is "this caption belongs to another image"; a caption that is wrong
in a subtler way scores higher than a random one, and is under-counted.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._validation import check_embeddings
from .neighbors import find_neighbors

SIGNALS = ("pair_similarity", "image_neighbor_agreement", "text_neighbor_agreement")
_NO_ALIGNMENT = ("the pairs agree with their captions no better than random pairings do: the "
                 "image and text embeddings do not share a space (random weights, or a model "
                 "without a text side that matches its images); nothing flagged")
_CHUNK = 2048  # rows per block when gathering neighbours' embeddings (bounds memory)


def find_caption_issues(image_embeddings, text_embeddings, *, n_neighbors: int = 10,
                        random_state: int = 0) -> pd.DataFrame:
    """Score every image-caption pair by its agreement with its neighbours; flag mismatches.

    Parameters
    ----------
    image_embeddings : (N, D) float, row i the image of pair i.
    text_embeddings : (N, D) float, row i the caption of pair i, in the same space.
    n_neighbors : k neighbours per modality; lowered to N - 1 (with a warning) for tiny sets.
    random_state : seed of the random re-pairings (and of FAISS's approximate index).

    Returns
    -------
    DataFrame, one row per pair in input order: the three ``SIGNALS`` (cosines), ``caption_score``
    in [0, 1] (lower = more likely mismatched), ``random_pair_quantile`` (share of random
    re-pairings whose fused signal is below this pair's), ``is_caption_issue``,
    ``suggested_caption`` (row id of the image-neighbours' caption most similar to this image,
    -1 if none), ``suggested_similarity`` (its cosine to this image) and ``rank`` (1 = most
    suspicious). ``attrs``: "method", "cutoff", "n_neighbors", "estimated_mismatch_rate",
    "warnings".
    """
    images, texts, n_neighbors = _check_inputs(image_embeddings, text_embeddings, n_neighbors)
    return _compute_caption_issues(images, texts, n_neighbors, random_state)


def _check_inputs(image_embeddings, text_embeddings, n_neighbors):
    images = check_embeddings(image_embeddings, name="image_embeddings")
    texts = check_embeddings(text_embeddings, name="text_embeddings")
    if images.shape[0] != texts.shape[0]:
        raise ValueError("image_embeddings and text_embeddings must have one row per pair; got "
                         f"{images.shape[0]} images and {texts.shape[0]} captions")
    if images.shape[1] != texts.shape[1]:
        raise ValueError("image_embeddings and text_embeddings must share one space (same D); "
                         f"got D={images.shape[1]} and D={texts.shape[1]}")
    n_pairs = images.shape[0]
    if n_pairs < 3:
        raise ValueError(f"find_caption_issues needs at least 3 pairs; got {n_pairs}")
    if not isinstance(n_neighbors, (int, np.integer)) or isinstance(n_neighbors, bool) \
            or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive int; got {n_neighbors!r}")
    if n_neighbors >= n_pairs:
        warnings.warn(f"n_neighbors={n_neighbors} needs more than {n_pairs} pairs; using "
                      f"{n_pairs - 1}", UserWarning, stacklevel=3)
        n_neighbors = n_pairs - 1
    return _unit(images), _unit(texts), int(n_neighbors)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _compute_caption_issues(images, texts, n_neighbors, random_state) -> pd.DataFrame:
    image_ids, image_sims = find_neighbors(images, n_neighbors=n_neighbors,
                                           random_state=random_state)
    text_ids, text_sims = find_neighbors(texts, n_neighbors=n_neighbors,
                                         random_state=random_state)
    neighbours = (image_ids, image_sims, text_ids, text_sims)
    table = pd.DataFrame(dict(zip(SIGNALS, _signals(images, texts, np.arange(len(images)),
                                                     neighbours))))
    scales = [_robust_scale(table[name].to_numpy()) for name in SIGNALS]
    fused = _fuse(table[list(SIGNALS)].to_numpy().T, scales)
    table["caption_score"] = _normal_cdf(_standardise(fused, _robust_scale(fused)))
    null = _random_pair_fused(images, texts, neighbours, scales, random_state)
    table["random_pair_quantile"] = np.searchsorted(np.sort(null), fused) / null.size
    rate = min(1.0, 2.0 * float(np.mean(fused < np.median(null))))
    order = np.argsort(fused, kind="stable")
    flagged = np.zeros(len(fused), dtype=bool)
    if rate < 0.5:  # at half or more, pairs and random pairings cannot be told apart
        flagged[order[: int(round(rate * len(fused)))]] = True
    table["is_caption_issue"] = flagged
    _add_suggestions(table, images, texts, image_ids)
    table["rank"] = np.empty(len(order), dtype=np.int64)
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    notes = [] if flagged.any() else [_NO_ALIGNMENT if rate >= 0.5 else
                                      "no pair scores like a random image-caption pairing; "
                                      "nothing flagged"]
    table.attrs = {"method": "neighbours in both modalities (LEMoN-style), equal weights",
                   "cutoff": float(table["caption_score"][flagged].max()) if flagged.any()
                   else None, "n_neighbors": n_neighbors, "estimated_mismatch_rate": rate,
                   "warnings": notes}
    return table


def _signals(images, texts, caption_of, neighbours) -> tuple:
    """The three ``SIGNALS`` of pairs (image i, caption ``caption_of[i]``), each (N,)."""
    image_ids, image_sims, text_ids, text_sims = neighbours
    captions = texts[caption_of]
    pair = np.einsum("nd,nd->n", images, captions)
    by_image = _weighted_mean(_cosines_to_neighbors(captions, texts, image_ids),
                              image_ids, image_sims)
    ids, sims = text_ids[caption_of], text_sims[caption_of]
    by_text = _weighted_mean(_cosines_to_neighbors(images, images, ids), ids, sims)
    return pair, by_image, by_text


def _random_pair_fused(images, texts, neighbours, scales, random_state) -> np.ndarray:
    """Fused signal of >= 2,000 random re-pairings (image i with another pair's caption)."""
    rng = np.random.default_rng(random_state)
    n_pairs = len(images)
    fused = []
    for _ in range(-(-2000 // n_pairs)):
        shift = rng.integers(1, n_pairs, size=n_pairs)  # never the pair's own caption
        caption_of = (np.arange(n_pairs) + shift) % n_pairs
        fused.append(_fuse(np.stack(_signals(images, texts, caption_of, neighbours)), scales))
    return np.concatenate(fused)


def _add_suggestions(table, images, texts, image_ids) -> None:
    """Columns suggested_caption / suggested_similarity: the image-neighbours' caption most
    similar to each image (-1 / NaN where the image has no neighbour)."""
    image_to_caption = _cosines_to_neighbors(images, texts, image_ids)
    rows = np.arange(len(images))
    best = np.argmax(image_to_caption, axis=1)
    has_best = np.isfinite(image_to_caption[rows, best])
    table["suggested_caption"] = np.where(has_best, image_ids[rows, best], -1)
    table["suggested_similarity"] = np.where(has_best, image_to_caption[rows, best], np.nan)


def _cosines_to_neighbors(queries, others, neighbor_ids) -> np.ndarray:
    """(N, k) cosine of ``queries[i]`` to ``others[neighbor_ids[i, j]]``; -inf where id is -1."""
    cosines = np.full(neighbor_ids.shape, -np.inf, dtype=np.float32)
    for start in range(0, len(queries), _CHUNK):
        ids = neighbor_ids[start:start + _CHUNK]
        block = np.einsum("nd,nkd->nk", queries[start:start + _CHUNK], others[np.maximum(ids, 0)])
        cosines[start:start + _CHUNK] = np.where(ids >= 0, block, -np.inf)
    return cosines


def _weighted_mean(values, neighbor_ids, neighbor_sims) -> np.ndarray:
    """Mean of ``values`` over each row's neighbours, weighted by max(similarity, 0) + 1e-3."""
    valid = neighbor_ids >= 0
    weights = np.where(valid, np.maximum(neighbor_sims, 0.0) + 1e-3, 0.0)
    totals = weights.sum(axis=1)
    sums = (weights * np.where(valid, values, 0.0)).sum(axis=1)
    return np.where(totals > 0, sums / np.where(totals > 0, totals, 1.0), 0.0)


def _robust_scale(values: np.ndarray) -> tuple:
    """(median, 1.4826 MAD) of ``values``; the standard deviation when MAD is 0; 1 if both are."""
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    if not spread > 1e-12:
        spread = float(np.std(values))
    return centre, spread if spread > 1e-12 else 1.0


def _standardise(values: np.ndarray, scale: tuple) -> np.ndarray:
    return (values - scale[0]) / scale[1]


def _fuse(signals: np.ndarray, scales: list) -> np.ndarray:
    """Equal-weight mean of the (3, N) ``signals``, each standardised by its own scale."""
    return np.mean([_standardise(row, scale) for row, scale in zip(signals, scales)], axis=0)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)
