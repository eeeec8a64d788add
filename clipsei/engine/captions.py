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
z-score of that mean: in [0, 1], rank-preserving, lower = more likely mismatched. The cutoff is a
calibrated probability: a two-component Gaussian mixture on the fused signal, kept only when BIC
prefers it to one component and its low component is the minority; a pair is flagged when its
posterior probability of the low ("mismatched") component exceeds 0.5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._validation import check_embeddings
from .neighbors import find_neighbors

SIGNALS = ("pair_similarity", "image_neighbor_agreement", "text_neighbor_agreement")
_CHUNK = 2048  # rows per block when gathering neighbours' embeddings (bounds memory)


def find_caption_issues(image_embeddings, text_embeddings, *, n_neighbors: int = 10,
                        random_state: int = 0) -> pd.DataFrame:
    """Score every image-caption pair by its agreement with its neighbours; flag mismatches.

    Parameters
    ----------
    image_embeddings : (N, D) float, row i the image of pair i.
    text_embeddings : (N, D) float, row i the caption of pair i, in the same space.
    n_neighbors : k neighbours per modality; lowered to N - 1 (with a warning) for tiny sets.
    random_state : seed of the mixture fit (and of FAISS's approximate index above 20,000).

    Returns
    -------
    DataFrame, one row per pair in input order: the three ``SIGNALS`` (cosines), ``caption_score``
    in [0, 1] (lower = more likely mismatched), ``mismatch_probability``, ``is_caption_issue``,
    ``suggested_caption`` (row id of the image-neighbours' caption most similar to this image,
    -1 if none), ``suggested_similarity`` (its cosine to this image) and ``rank`` (1 = most
    suspicious). ``attrs``: "method", "cutoff", "n_neighbors", "mixture", "warnings".
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
    caption_to_caption = _cosines_to_neighbors(texts, texts, image_ids)
    image_to_image = _cosines_to_neighbors(images, images, text_ids)
    image_to_caption = _cosines_to_neighbors(images, texts, image_ids)
    table = pd.DataFrame({
        "pair_similarity": np.einsum("nd,nd->n", images, texts),
        "image_neighbor_agreement": _weighted_mean(caption_to_caption, image_ids, image_sims),
        "text_neighbor_agreement": _weighted_mean(image_to_image, text_ids, text_sims),
    })
    fused = np.mean([_robust_z(table[name].to_numpy()) for name in SIGNALS], axis=0)
    table["caption_score"] = _normal_cdf(_robust_z(fused))
    probability, mixture, notes = _mismatch_probability(fused, random_state)
    table["mismatch_probability"] = probability
    table["is_caption_issue"] = probability > 0.5
    best = np.argmax(image_to_caption, axis=1)
    has_best = np.isfinite(image_to_caption[np.arange(len(best)), best])
    table["suggested_caption"] = np.where(has_best, image_ids[np.arange(len(best)), best], -1)
    table["suggested_similarity"] = np.where(
        has_best, image_to_caption[np.arange(len(best)), best], np.nan)
    order = np.argsort(table["caption_score"].to_numpy(), kind="stable")
    table["rank"] = np.empty(len(order), dtype=np.int64)
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    flagged = table["is_caption_issue"].to_numpy()
    table.attrs = {"method": "neighbours in both modalities (LEMoN-style), equal weights",
                   "cutoff": float(table["caption_score"][flagged].max()) if flagged.any()
                   else None, "n_neighbors": n_neighbors, "mixture": mixture,
                   "warnings": notes}
    return table


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


def _robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD), falling back to the standard deviation when MAD is 0."""
    centre = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - centre))
    if not spread > 1e-12:
        spread = float(np.std(values))
    return (values - centre) / spread if spread > 1e-12 else np.zeros_like(values)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


def _mismatch_probability(fused: np.ndarray, random_state) -> tuple:
    """Posterior of the low component of a 1-D two-Gaussian mixture, or zeros when one Gaussian
    explains the fused signal as well (BIC) or the low component is not a minority."""
    from sklearn.mixture import GaussianMixture

    column = fused.reshape(-1, 1).astype(np.float64)
    fits = [GaussianMixture(n, random_state=random_state, n_init=2).fit(column) for n in (1, 2)]
    one, two = fits
    means = two.means_.ravel()
    low, high = int(np.argmin(means)), int(np.argmax(means))
    mixture = {"bic_one": float(one.bic(column)), "bic_two": float(two.bic(column)),
               "low_mean": float(means[low]), "high_mean": float(means[high]),
               "low_weight": float(two.weights_[low]), "used": False}
    if mixture["bic_two"] >= mixture["bic_one"] or mixture["low_weight"] >= 0.5:
        note = ("the pairs' agreement shows no separate low group (a one-Gaussian fit is as "
                "good, or the low group is not a minority); nothing flagged, see caption_score")
        return np.zeros(len(fused)), mixture, [note]
    mixture["used"] = True
    posterior = two.predict_proba(column)[:, low]
    return np.where(fused < means[high], posterior, 0.0), mixture, []
