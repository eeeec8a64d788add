"""Exact and near-duplicates, grouped into sets, and duplicates that cross data splits.

Exact duplicates share a content hash: the same image whatever the file's metadata or PNG
compression (:mod:`clipsei.images.content_hash`), or the same array. Near-duplicates are
pairs from the neighbour lists whose cosine similarity is at least ``min_similarity``; pairs
are joined into sets with union-find, so a chain of copies is one group. Labels play no
part: a duplicate set with conflicting labels is still one set. The neighbour lists are
those of :func:`search_duplicate_neighbors`, one space whatever the detection method (the
default detector's own lists are the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .features import standardized_rows
from .neighbors import NeighborSearch, search_neighbors

NEAR_DUPLICATE_SIMILARITY = 0.98


@dataclass(frozen=True)
class Duplicates:
    """Duplicate sets, one entry per sample (N,).

    duplicate_group: int64 id of the sample's set (exact and near-duplicates together), -1
        when it has none; ids count from 0 in order of each set's first sample.
    is_duplicate: bool, in a set with at least one other sample.
    is_exact_duplicate: bool, shares its content hash with another sample.
    is_near_duplicate: bool, in a set through a cosine >= the threshold only.
    is_leakage: bool, its set holds samples of more than one split (False without splits).
    """

    duplicate_group: np.ndarray
    is_duplicate: np.ndarray
    is_exact_duplicate: np.ndarray
    is_near_duplicate: np.ndarray
    is_leakage: np.ndarray

    def as_frame(self) -> pd.DataFrame:
        """The fields as columns of a DataFrame, one row per sample."""
        return pd.DataFrame({name: getattr(self, name) for name in self.__dataclass_fields__})


def find_duplicates(neighbor_ids, neighbor_sims, *, content_hashes=None, embeddings=None,
                    splits=None, min_similarity: float = NEAR_DUPLICATE_SIMILARITY) -> Duplicates:
    """Group samples into exact and near-duplicate sets.

    neighbor_ids, neighbor_sims: (N, k) neighbour lists (-1 = none) and their cosines.
    content_hashes: (N,) strings or None; "" or None entries match nothing.
    embeddings: (N, D) or None. When given, a candidate pair's cosine is recomputed on these
        (unit rows) instead of read from ``neighbor_sims``, which may come from a transformed
        space (the detector's standardised features).
    splits: (N,) split names (train/val/test) or None. min_similarity: cosine in (0, 1].
    """
    neighbor_ids = np.asarray(neighbor_ids)
    neighbor_sims = np.asarray(neighbor_sims, dtype=np.float64)
    if neighbor_ids.ndim != 2 or neighbor_ids.shape != neighbor_sims.shape:
        raise ValueError("neighbor_ids and neighbor_sims must be (N, k) arrays of one shape; "
                         f"got {neighbor_ids.shape} and {neighbor_sims.shape}")
    if not 0.0 < float(min_similarity) <= 1.0:
        raise ValueError(f"min_similarity must be in (0, 1]; got {min_similarity}")
    n_samples = neighbor_ids.shape[0]
    for name, values in (("content_hashes", content_hashes), ("splits", splits),
                         ("embeddings", embeddings)):
        if values is not None and len(values) != n_samples:
            raise ValueError(f"{name} must have {n_samples} entries; got {len(values)}")
    parent = np.arange(n_samples)
    exact = np.zeros(n_samples, dtype=bool)
    if content_hashes is not None:
        for first, second in _exact_pairs(content_hashes):
            _union(parent, first, second)
            exact[[first, second]] = True
    near_pairs = _near_pairs(neighbor_ids, neighbor_sims, embeddings, float(min_similarity))
    for first, second in near_pairs:
        _union(parent, first, second)
    return _sets(parent, exact, splits)


def search_duplicate_neighbors(embeddings, *, n_neighbors: int = 10, groups=None,
                               random_state: int = 0, progress=None) -> NeighborSearch:
    """Neighbours for duplicates and other data issues, the same whatever the detection
    method: the cosine of rows of ``embeddings`` (N, D), checked, after centring and scaling
    each column over the set (the space the default detector searches; raw CLIP rows share
    one direction, so their cosines are all near 1), k = ``min(n_neighbors, N - 1)``, none
    from a row's own group (``groups`` (N,) or None). Returns a :class:`NeighborSearch`."""
    rows = standardized_rows(embeddings)
    return search_neighbors(rows, n_neighbors=min(n_neighbors, len(rows) - 1), groups=groups,
                            random_state=random_state, progress=progress)


def _exact_pairs(content_hashes) -> list:
    """(first, other) row pairs that share a non-empty hash, one pair per extra copy."""
    first_seen: dict = {}
    pairs = []
    for row, digest in enumerate(content_hashes):
        if digest is None or digest == "" or (isinstance(digest, float) and np.isnan(digest)):
            continue
        pairs.append((first_seen.setdefault(digest, row), row))
    return [(a, b) for a, b in pairs if a != b]


def _near_pairs(neighbor_ids, neighbor_sims, embeddings, min_similarity: float):
    rows, cols = np.nonzero(neighbor_ids >= 0)
    partners = neighbor_ids[rows, cols]
    if embeddings is None:
        sims = neighbor_sims[rows, cols]
    else:
        unit = np.asarray(embeddings, dtype=np.float32)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        sims = np.einsum("ij,ij->i", unit[rows], unit[partners])
    keep = sims >= min_similarity - 1e-6  # float16 storage rounds identical rows to ~1 - 1e-7
    return zip(rows[keep].tolist(), partners[keep].tolist())


def _find(parent: np.ndarray, row: int) -> int:
    root = row
    while parent[root] != root:
        root = parent[root]
    while parent[row] != root:  # path compression
        parent[row], row = root, parent[row]
    return root


def _union(parent: np.ndarray, first: int, second: int) -> None:
    a, b = _find(parent, first), _find(parent, second)
    if a != b:
        parent[max(a, b)] = min(a, b)


def _sets(parent: np.ndarray, exact: np.ndarray, splits) -> Duplicates:
    roots = np.asarray([_find(parent, row) for row in range(parent.size)], dtype=np.int64)
    sizes = np.bincount(roots, minlength=parent.size)
    in_set = sizes[roots] > 1
    group = np.full(parent.size, -1, dtype=np.int64)
    # a set's root is its smallest row, so sorted roots number the sets by first sample
    group[in_set] = np.unique(roots[in_set], return_inverse=True)[1]
    leakage = np.zeros(parent.size, dtype=bool)
    if splits is not None and in_set.any():
        frame = pd.DataFrame({"group": group[in_set], "split": np.asarray(splits)[in_set]})
        n_splits = frame.groupby("group")["split"].nunique()
        leakage[in_set] = n_splits.reindex(group[in_set]).to_numpy() > 1
    return Duplicates(duplicate_group=group, is_duplicate=in_set,
                      is_exact_duplicate=exact, is_near_duplicate=in_set & ~exact,
                      is_leakage=leakage)
