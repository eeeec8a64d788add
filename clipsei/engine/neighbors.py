"""Nearest neighbours in embedding space (FAISS), label agreement and near-duplicates.

Neighbours are found by inner product on L2-normalised embeddings, i.e. cosine similarity.
Up to ``exact_max_samples`` the search is exact (``IndexFlatIP``); above it an inverted file
(``sqrt(N)`` k-means lists; the fewest probed lists, doubling from one, whose recall@k against
exact search on a sample of queries reaches 0.95), scanned a list at a time for all the queries
that probe it, with one float32 matrix product per list.
A sample never counts as its own neighbour: the query is removed by id, not by position,
because with exact duplicates FAISS may list another row before the query itself. With
``groups`` (e.g. a patient id), neighbours from the query's own group are removed too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pandas as pd

from .._validation import check_embeddings
from . import features as _features
from .features import FeatureRows, as_feature_rows
from .progress import StageProgress

EXACT_MAX_SAMPLES = 20_000


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("neighbour search needs FAISS: pip install faiss-cpu") from err
    return faiss


def _exact_index(rows: FeatureRows):
    """A FAISS ``IndexFlatIP`` holding every unit row of ``rows``, added a block at a time."""
    index = _faiss().IndexFlatIP(rows.shape[1])
    for _, block in rows.blocks():
        index.add(block)
    return index


class _ListIndex:
    """An inverted file over unit rows: ``sqrt(N)`` k-means centroids (FAISS, trained on
    ``30 * n_lists`` sampled rows) and each row's nearest centroid (its list). A search scans
    each probed list once for all the queries that probe it, with a FAISS flat index of the
    list's rows (float32, exact within the list; one BLAS product per list, where FAISS's own
    IVF scan compares one query at a time); FAISS's threads share the lists, one each."""

    def __init__(self, rows: FeatureRows, *, random_state: int):
        faiss = _faiss()
        n_samples, dim = rows.shape
        self.rows, self.n_lists = rows, max(1, int(np.sqrt(n_samples)))
        self.quantizer = faiss.IndexFlatIP(dim)  # the centroids, kept past ``ivf``
        ivf = faiss.IndexIVFFlat(self.quantizer, dim, self.n_lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(random_state).choice(
            n_samples, min(n_samples, 30 * self.n_lists), replace=False)
        ivf.cp.seed, ivf.cp.niter, ivf.cp.min_points_per_centroid = random_state, 10, 5
        ivf.train(rows.rows(sample))  # trains the centroids only: no row is added
        self._probes = self._assign(np.arange(n_samples), min(8, self.n_lists))
        order = np.argsort(self._probes[:, 0], kind="stable")
        self.members = np.split(order, np.searchsorted(self._probes[order, 0],
                                                       np.arange(1, self.n_lists)))

    def _nearest_lists(self, queries, n_probe) -> np.ndarray:
        """(Q, n_probe) int32 lists nearest to the ``queries`` rows (the first 8 are kept)."""
        if n_probe <= self._probes.shape[1]:
            return self._probes[queries, :n_probe]
        return self._assign(queries, n_probe)

    def _assign(self, queries, n_probe) -> np.ndarray:
        found, block = [], _features.BLOCK_ROWS
        for start in range(0, queries.size, block):
            found.append(self.quantizer.search(
                self.rows.rows(queries[start:start + block]), n_probe)[1].astype(np.int32))
        return np.concatenate(found) if found else np.zeros((0, n_probe), np.int32)

    def search(self, queries, n_search, counter, *, n_probe):
        """(Q, n_search) similarities and ids of the best rows in the ``n_probe`` lists
        nearest to each of the ``queries`` rows (-inf and -1 where fewer exist)."""
        probes = self._nearest_lists(queries, n_probe).ravel()
        order = np.argsort(probes, kind="stable")
        bounds = np.searchsorted(probes[order], np.arange(self.n_lists + 1))
        heap = _faiss().ResultHeap(queries.size, n_search, keep_max=True)
        tasks, counts = [], []  # a list's queries are counted done with its first part
        for lst in np.flatnonzero(np.diff(bounds)):
            at, members = order[bounds[lst]:bounds[lst + 1]] // n_probe, self.members[lst]
            for start in range(0, members.size, _features.BLOCK_ROWS // 4):
                tasks.append((queries, at, members[start:start + _features.BLOCK_ROWS // 4],
                              n_search))
                counts.append(at.size if start == 0 else 0)
        n_searched = 0
        with ThreadPoolExecutor(_faiss().omp_get_max_threads()) as pool:
            for count, found in zip(counts, pool.map(self._scan, tasks)):
                for chunk, sims, ids in found:
                    heap.add_result_subset(chunk, sims, ids)
                counter.advance((n_searched + count) // n_probe - n_searched // n_probe)
                n_searched += count
        heap.finalize()
        return np.where(heap.I >= 0, heap.D, -np.inf).astype(np.float32), heap.I

    def _scan(self, task):
        """[(query positions, similarities, ids)]: the best ``n_search`` of the rows
        ``part`` (one list, or a block of it) for the ``queries`` at positions ``at``,
        ``BLOCK_ROWS // 4`` queries at a time, by a FAISS flat index on one thread."""
        queries, at, part, n_search = task
        _faiss().omp_set_num_threads(1)  # this worker thread only: the pool is the parallelism
        index = _faiss().IndexFlatIP(self.rows.shape[1])
        index.add(self.rows.rows(part))
        found = []
        for start in range(0, at.size, _features.BLOCK_ROWS // 4):
            chunk = at[start:start + _features.BLOCK_ROWS // 4]
            sims, ids = index.search(self.rows.rows(queries[chunk]), min(n_search, part.size))
            found.append((chunk, sims, np.where(ids >= 0, part[ids], -1)))
        return found


@dataclass(frozen=True)
class NeighborSearch:
    """Neighbours of every sample and how they were found.

    neighbor_ids, neighbor_sims : (N, k) as :func:`find_neighbors` returns them.
    index : "exact" or "ivf-flat"; n_probe : IVF lists searched (None when exact);
    recall : recall@k against exact search on a random sample of queries (1.0 when exact).
    """

    neighbor_ids: np.ndarray
    neighbor_sims: np.ndarray
    index: str
    n_probe: int | None
    recall: float

    def as_dict(self) -> dict:
        """JSON-ready description (no arrays)."""
        return {"index": self.index, "n_probe": self.n_probe, "recall_at_k": self.recall}


def search_neighbors(embeddings, *, n_neighbors: int = 10, groups=None,
                     exact_max_samples: int = EXACT_MAX_SAMPLES, n_probe: int = 1,
                     min_recall: float = 0.95, n_recall_queries: int = 500,
                     random_state: int = 0, progress=None) -> NeighborSearch:
    """:func:`find_neighbors`, and above ``exact_max_samples`` a recall check: the IVF
    lists probed start at ``n_probe`` and double until recall@k against exact search on
    ``n_recall_queries`` random rows reaches ``min_recall`` with 95% confidence (or every
    list is probed); only then are all rows searched, once. Returns a
    :class:`NeighborSearch` (its recall: the sample's mean).
    """
    if len(embeddings) <= exact_max_samples:
        ids, sims = find_neighbors(embeddings, n_neighbors=n_neighbors, groups=groups,
                                   random_state=random_state, progress=progress)
        return NeighborSearch(ids, sims, "exact", None, 1.0)
    unit, group_codes, index = _prepare_search(embeddings, n_neighbors, groups,
                                               exact_max_samples, random_state)
    queries, exact_ids, exact_sims = _exact_sample(unit, n_neighbors, groups,
                                                   n_recall_queries, random_state)
    while True:  # one index; the sample's queries with more lists probed until recall holds
        found, _ = _search_excluding(partial(index.search, n_probe=n_probe), unit, n_neighbors,
                                     group_codes, StageProgress(None, "", 0), queries=queries)
        recall = _recall(found, exact_ids, exact_sims)
        if (_recall(found, exact_ids, exact_sims, lower_bound=True) >= min_recall
                or n_probe >= index.n_lists):
            break
        n_probe = min(2 * n_probe, index.n_lists)
    counter = StageProgress(progress, "neighbours", unit.shape[0])
    ids, sims = _search_excluding(partial(index.search, n_probe=n_probe), unit, n_neighbors,
                                  group_codes, counter)
    return NeighborSearch(ids, sims, "ivf-flat", n_probe, recall)


def estimate_recall(embeddings, neighbor_ids, *, groups=None, n_queries: int = 200,
                    random_state: int = 0) -> float:
    """Mean recall@k of ``neighbor_ids`` (N, k) against exact cosine search (self and
    same-group rows excluded) on ``n_queries`` random rows, scanning a block at a time."""
    queries, exact_ids, exact_sims = _exact_sample(
        as_feature_rows(embeddings), neighbor_ids.shape[1], groups, n_queries, random_state)
    return _recall(neighbor_ids[queries], exact_ids, exact_sims)


def _recall(found, exact_ids, exact_sims, *, lower_bound: bool = False) -> float:
    """Mean share of each query's exact neighbours (finite similarity) among ``found``; with
    ``lower_bound``, the mean minus 1.645 standard errors (a one-sided 95% bound)."""
    shares = np.array([np.intersect1d(row[row >= 0], exact[np.isfinite(sims)]).size
                       / max(int(np.isfinite(sims).sum()), 1)
                       for row, exact, sims in zip(found, exact_ids, exact_sims)])
    spread = 1.645 * shares.std() / np.sqrt(shares.size) if lower_bound else 0.0
    return float(shares.mean() - spread)


def _exact_sample(rows, k, groups, n_queries, random_state):
    """Sorted random query rows and their exact top-``k`` ids and similarities (self and
    same-group rows excluded; -1 and -inf where fewer exist), scanning a block at a time."""
    n_samples = rows.shape[0]
    rng = np.random.default_rng(random_state)
    queries = np.sort(rng.choice(n_samples, min(n_queries, n_samples), replace=False))
    query_rows, positions = rows.rows(queries), np.arange(queries.size)
    heap = _faiss().ResultHeap(queries.size, k, keep_max=True)  # -inf never enters it
    for start, block_rows in rows.blocks(_features.BLOCK_ROWS // 4):  # (Q, block) at a time
        sims = query_rows @ block_rows.T
        ids = np.arange(start, start + block_rows.shape[0])
        inside = (queries >= start) & (queries < ids[-1] + 1)
        sims[positions[inside], queries[inside] - start] = -np.inf
        if groups is not None:
            group_values = np.asarray(groups)
            sims[group_values[ids][None, :] == group_values[queries][:, None]] = -np.inf
        heap.add_result_subset(positions, sims, ids)
    heap.finalize()
    return queries, heap.I, np.where(heap.I >= 0, heap.D, -np.inf).astype(np.float32)


def find_neighbors(embeddings, *, n_neighbors: int = 10, groups=None,
                   exact_max_samples: int = EXACT_MAX_SAMPLES, n_probe: int = 8,
                   random_state: int = 0, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` most similar other samples of every sample.

    Parameters
    ----------
    embeddings : (N, D) float array (rows are unit-scaled here) or
        :class:`~clipsei.engine.features.FeatureRows`.
    n_neighbors : k, must be smaller than N.
    groups : (N,) array or None; neighbours sharing the query's group are excluded.
    exact_max_samples : above this N an inverted file (``sqrt(N)`` lists) is searched.
    n_probe : lists searched per query (inverted file only).
    progress : None or a callback ``(stage, done, total)`` told the rows searched
        (see :mod:`clipsei.engine.progress`).

    Returns
    -------
    neighbor_ids : (N, k) int64, most similar first; -1 where fewer than k exist.
    neighbor_sims : (N, k) float32 cosine similarities; -inf where the id is -1.
    """
    embeddings, group_codes, index = _prepare_search(
        embeddings, n_neighbors, groups, exact_max_samples, random_state)
    counter = StageProgress(progress, "neighbours", embeddings.shape[0])
    search = (partial(_search_in_blocks, index, embeddings) if isinstance(index, _faiss().Index)
              else partial(index.search, n_probe=n_probe))
    return _search_excluding(search, embeddings, n_neighbors, group_codes, counter)


def _prepare_search(embeddings, n_neighbors, groups, exact_max_samples, random_state):
    """Unit rows (:class:`FeatureRows`, as given or of the checked array), group codes (or
    None) and the index: a FAISS ``IndexFlatIP`` up to ``exact_max_samples``, else a
    :class:`_ListIndex`."""
    if not isinstance(embeddings, FeatureRows):
        embeddings = FeatureRows(check_embeddings(embeddings))
    n_samples = embeddings.shape[0]
    if not isinstance(n_neighbors, (int, np.integer)) or not 0 < n_neighbors < n_samples:
        raise ValueError(f"n_neighbors must be an int in [1, N={n_samples}); got {n_neighbors!r}")
    group_codes = None
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups must have shape ({n_samples},); got {groups.shape}")
        group_codes = pd.factorize(groups)[0]
    index = (_exact_index(embeddings) if n_samples <= exact_max_samples
             else _ListIndex(embeddings, random_state=random_state))
    return embeddings, group_codes, index


def _search_excluding(search, embeddings, n_neighbors, group_codes, counter, queries=None):
    """Search k + extra, drop self (and same-group) ids, widen until k remain or none left.
    ``search(rows, n_search, counter)`` gives (Q, n_search) similarities and ids.
    Returns (Q, k) ids and similarities for the ``queries`` rows (None: every row)."""
    n_samples = embeddings.shape[0]
    queries = np.arange(n_samples) if queries is None else np.asarray(queries)
    neighbor_ids = np.full((queries.size, n_neighbors), -1, dtype=np.int64)
    neighbor_sims = np.full((queries.size, n_neighbors), -np.inf, dtype=np.float32)
    pending = np.arange(queries.size)  # positions in ``queries``
    n_search = n_neighbors + 1
    while pending.size:
        n_search = min(n_search, n_samples)
        sims, ids = search(queries[pending], n_search, counter)
        keep = (ids >= 0) & (ids != queries[pending][:, None])
        if group_codes is not None:
            keep &= group_codes[np.maximum(ids, 0)] != group_codes[queries[pending]][:, None]
        n_kept = keep.sum(axis=1)
        # a -1 id: every candidate (all rows, or all of the probed lists) was returned
        done = (n_kept >= n_neighbors) | (n_search >= n_samples) | (ids < 0).any(axis=1)
        chosen = keep & (np.cumsum(keep, axis=1) <= n_neighbors)  # first k kept, in order
        columns = np.argsort(~chosen, axis=1, kind="stable")[:, :n_neighbors]
        valid = np.take_along_axis(chosen, columns, axis=1)[done]
        neighbor_ids[pending[done]] = np.where(
            valid, np.take_along_axis(ids, columns, axis=1)[done], -1)
        neighbor_sims[pending[done]] = np.where(
            valid, np.take_along_axis(sims, columns, axis=1)[done], -np.inf)
        pending = pending[~done]
        counter.done -= pending.size  # rows searched again with a wider k are not done yet
        n_search *= 4
    return neighbor_ids, neighbor_sims


def _search_in_blocks(index, embeddings, rows, n_search, counter):
    """``index.search`` of ``embeddings[rows]`` a block (``BLOCK_ROWS // 4``) at a time,
    counting the rows done."""
    sims, ids, block = [], [], _features.BLOCK_ROWS // 4
    for start in range(0, rows.size, block):
        found = index.search(embeddings.rows(rows[start:start + block]), n_search)
        sims.append(found[0])
        ids.append(found[1])
        counter.advance(min(block, rows.size - start))
    return np.concatenate(sims), np.concatenate(ids)


def compute_neighbor_votes(neighbor_ids, neighbor_sims, labels, *, n_classes: int) -> np.ndarray:
    """Similarity-weighted label votes of each sample's neighbours, (N, K) rows summing to 1.

    A neighbour's weight is ``max(similarity, 0)``, plus a small floor so that a sample whose
    neighbours are all orthogonal still gets a plain majority vote. Rows with no neighbour
    at all are uniform.
    """
    valid = neighbor_ids >= 0
    weights = np.where(valid, np.maximum(neighbor_sims, 0.0) + 1e-3, 0.0)
    votes = np.zeros((neighbor_ids.shape[0], n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(neighbor_ids.shape[0]), neighbor_ids.shape[1])
    np.add.at(votes, (rows, labels[np.maximum(neighbor_ids, 0)].ravel()), weights.ravel())
    totals = votes.sum(axis=1, keepdims=True)
    votes = np.where(totals > 0, votes / np.where(totals > 0, totals, 1), 1.0 / n_classes)
    return votes.astype(np.float32)


def find_conflicting_duplicates(neighbor_ids, neighbor_sims, labels, *,
                                min_similarity: float = 0.98) -> pd.DataFrame:
    """Pairs ``i < j``, near-duplicates (cosine >= ``min_similarity``) with different labels.

    Returns a DataFrame with columns ``i``, ``j`` (row indices) and ``similarity``, most
    similar first. Pairs are found among the neighbour lists, so at most k per sample.
    """
    rows, cols = np.nonzero((neighbor_ids >= 0) & (neighbor_sims >= min_similarity))
    first = np.minimum(rows, neighbor_ids[rows, cols])
    second = np.maximum(rows, neighbor_ids[rows, cols])
    table = pd.DataFrame({"i": first, "j": second, "similarity": neighbor_sims[rows, cols]})
    table = table[labels[table["i"].to_numpy()] != labels[table["j"].to_numpy()]]
    table = table.drop_duplicates(["i", "j"]).sort_values("similarity", ascending=False)
    return table.reset_index(drop=True)


def warn_exact_duplicates(neighbor_sims) -> None:
    """Warn (UserWarning) when any sample's nearest neighbour is an exact duplicate."""
    n_duplicated = int((neighbor_sims[:, 0] >= 1 - 1e-6).sum())
    if n_duplicated:
        warnings.warn(f"{n_duplicated} samples have an exact duplicate embedding; duplicates "
                      "reinforce each other's labels", UserWarning, stacklevel=5)


def search_neighbor_votes(embeddings, labels, *, n_classes: int, n_neighbors: int, groups,
                          random_state: int, progress=None) -> tuple[NeighborSearch, np.ndarray]:
    """:func:`search_neighbors` with k = ``min(n_neighbors, N - 1)``, a warning on exact
    duplicates, and the neighbours' label votes (N, K) for ``labels`` (N,)."""
    search = search_neighbors(embeddings, n_neighbors=min(n_neighbors, labels.size - 1),
                              groups=groups, random_state=random_state, progress=progress)
    warn_exact_duplicates(search.neighbor_sims)
    votes = compute_neighbor_votes(search.neighbor_ids, search.neighbor_sims, labels,
                                   n_classes=n_classes)
    return search, votes
