"""Feature preparation: the one owner of unit rows, centring and standardising.

The heads and the neighbour search read :class:`FeatureRows`: unit rows of
``(embeddings - shift) / scale`` computed a block at a time from the embeddings as given
(float16 or float32, a memory map included). Up to ``DENSE_MAX_BYTES`` a feature set is kept
in memory as (N, D) float32; above it (a million rows: 2 GB per set) its rows are converted on
the fly, with the same arithmetic row by row, so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# a feature set at most this big (float32) is kept in memory, larger ones converted per block
DENSE_MAX_BYTES = 1 << 30
# rows converted at a time where all are read in turn (statistics, index, checks)
BLOCK_ROWS = 65536


class FeatureRows:
    """(N, D) float32 unit rows of ``(source - shift) / scale``, read by rows or blocks.

    source : (N, D) float16 or float32 array, never copied whole (a memory map stays on disk);
    shift, scale : (D,) float32 or None; max_dense_bytes : keep the rows in memory (``dense``,
    else None) up to this size (None: ``DENSE_MAX_BYTES``).
    """

    def __init__(self, source, shift=None, scale=None, *, max_dense_bytes=None):
        self.source, self.shift, self.scale = source, shift, scale
        self.shape = (int(source.shape[0]), int(source.shape[1]))
        self.dense = None
        limit = DENSE_MAX_BYTES if max_dense_bytes is None else max_dense_bytes
        if 4 * self.shape[0] * self.shape[1] <= limit:
            dense = np.empty(self.shape, np.float32)
            for start, block in self.blocks():  # converted, as self.dense is still None
                dense[start:start + block.shape[0]] = block
            self.dense = dense

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index) -> np.ndarray:
        """(n, D) float32 unit rows for ``index`` (int array or slice)."""
        if self.dense is not None:
            return self.dense[index]
        return self._convert(self.source[index])

    def blocks(self, block: int | None = None):
        """Yield ``(start, rows)`` over all rows, ``block`` (None: ``BLOCK_ROWS``) at a time."""
        block = block or BLOCK_ROWS
        for start in range(0, self.shape[0], block):
            part = slice(start, start + block)
            yield start, (self.dense[part] if self.dense is not None
                          else self._convert(self.source[part]))

    def _convert(self, part) -> np.ndarray:
        part = np.array(part, dtype=np.float32)  # an owned copy, changed in place below
        if self.shift is not None:
            part -= self.shift
        if self.scale is not None:
            part /= self.scale
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        part /= np.where(norms > 0, norms, 1.0).astype(np.float32)
        return part


def as_feature_rows(embeddings) -> FeatureRows:
    """``embeddings`` itself if it is :class:`FeatureRows`, else its unit rows (N, D)."""
    return embeddings if isinstance(embeddings, FeatureRows) else FeatureRows(embeddings)


@dataclass(frozen=True)
class Features:
    """Prepared inputs of the heads and the neighbour search.

    in_sample : :class:`FeatureRows` for the in-sample heads (centred first when there is no
        text to start from).
    heldout : :class:`FeatureRows` for held-out heads and neighbours: standardised where the
        method asks for it, else ``in_sample`` itself.
    head_init : (K or K + 1, D) float32 unit rows (class text, then the "other" text) or None.
    heldout_init : (K, D) or None, the held-out heads' start (None on standardised features,
        where the text does not live).
    """

    in_sample: FeatureRows
    heldout: FeatureRows
    head_init: np.ndarray | None
    heldout_init: np.ndarray | None


def prepare_features(embeddings, head_init: np.ndarray | None, *, n_classes: int,
                     standardize: bool, max_dense_bytes: int | None = None) -> Features:
    """Unit rows of ``embeddings`` (N, D) for every stage; ``head_init`` rows are unit-scaled."""
    mean, spread = column_moments(embeddings)
    options = dict(max_dense_bytes=max_dense_bytes)
    heldout = (standardized_rows(embeddings, mean, spread, **options) if standardize
               else None)
    if head_init is not None:
        head_init = head_init / np.linalg.norm(head_init, axis=1, keepdims=True)
        in_sample = FeatureRows(embeddings, **options)
    else:  # image-only features: centre before cosines
        in_sample = FeatureRows(embeddings, mean, **options)
    heldout_init = None if standardize or head_init is None else head_init[:n_classes]
    return Features(in_sample=in_sample, heldout=in_sample if heldout is None else heldout,
                    head_init=head_init, heldout_init=heldout_init)


def standardized_rows(embeddings, mean=None, spread=None, **options) -> FeatureRows:
    """Unit rows of ``embeddings`` (N, D) after centring and scaling each column by its
    ``mean`` and ``spread`` (:func:`column_moments` when not given; a constant column keeps
    scale 1): the space the default's held-out heads and neighbour search use."""
    if mean is None or spread is None:
        mean, spread = column_moments(embeddings)
    return FeatureRows(embeddings, mean, np.where(spread > 0, spread, 1.0).astype(np.float32),
                       **options)


def column_moments(x) -> tuple[np.ndarray, np.ndarray]:
    """(D,) float32 mean and standard deviation of each column of ``x`` (N, D), summed
    ``BLOCK_ROWS`` rows at a time in float64 (two passes: no (N, D) temporary)."""
    block = BLOCK_ROWS
    total = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], block):
        total += np.asarray(x[start:start + block], dtype=np.float64).sum(axis=0)
    mean = total / x.shape[0]
    squares = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], block):
        squares += np.square(np.asarray(x[start:start + block], dtype=np.float64) - mean).sum(0)
    return mean.astype(np.float32), np.sqrt(squares / x.shape[0]).astype(np.float32)


def check_embedding_rows(embeddings, *, name: str = "embeddings"):
    """``embeddings`` (N, D) checked a block at a time: a float16/float32 array (a memory map
    included) is returned as it is, anything else as C-contiguous float32. ``BLOCK_ROWS``
    rows are checked at a time.

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for a wrong shape,
    non-finite values or rows of zero norm, naming the rows.
    """
    from .._validation import check_embeddings

    if (not isinstance(embeddings, np.ndarray) or embeddings.dtype not in (np.float16, np.float32)
            or embeddings.ndim != 2 or 0 in embeddings.shape):
        return check_embeddings(embeddings, name=name)  # converts, or its one-line error
    not_finite, zero, block = [], [], BLOCK_ROWS
    for start in range(0, embeddings.shape[0], block):
        part = np.asarray(embeddings[start:start + block], dtype=np.float32)
        finite = np.isfinite(part).all(axis=1)
        not_finite.append(start + np.flatnonzero(~finite))
        zero.append(start + np.flatnonzero(finite & ~part.any(axis=1)))
    for bad, rule, what in ((np.concatenate(not_finite), "be finite", "contain NaN or inf"),
                            (np.concatenate(zero), "have non-zero rows", "are all zeros")):
        if bad.size:
            shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise ValueError(f"{name} must {rule}; rows [{shown}] {what} ({bad.size} rows)")
    return embeddings


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) float32 with each nonzero row scaled to unit L2 norm."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # one (N, D) float32 result, no float64 or second temporary (a million rows: 2 GB each)
    return np.divide(x, np.where(norms > 0, norms, 1.0), dtype=np.float32)


def standardize_columns(x: np.ndarray) -> np.ndarray:
    """Centre each dimension and scale it to unit variance (constant dimensions stay 0)."""
    spread = x.std(axis=0, keepdims=True)
    centred = x - x.mean(axis=0, keepdims=True)
    centred /= np.where(spread > 0, spread, 1.0)  # in place: one (N, D) array, not two
    return centred
