"""Feature preparation: the one owner of unit rows, centring and standardising."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Features:
    """Prepared inputs of the heads and the neighbour search.

    in_sample : (N, D) float32 unit rows for the in-sample heads (centred first when there is
        no text to start from).
    heldout : (N, D) float32 unit rows for held-out heads and neighbours: standardised where
        the method asks for it, else ``in_sample`` itself.
    head_init : (K or K + 1, D) float32 unit rows (class text, then the "other" text) or None.
    heldout_init : (K, D) or None, the held-out heads' start (None on standardised features,
        where the text does not live).
    """

    in_sample: np.ndarray
    heldout: np.ndarray
    head_init: np.ndarray | None
    heldout_init: np.ndarray | None


def prepare_features(embeddings: np.ndarray, head_init: np.ndarray | None, *, n_classes: int,
                     standardize: bool) -> Features:
    """Unit rows of ``embeddings`` (N, D) for every stage; ``head_init`` rows are unit-scaled."""
    heldout = unit_rows(standardize_columns(embeddings)) if standardize else None
    if head_init is not None:
        head_init = head_init / np.linalg.norm(head_init, axis=1, keepdims=True)
        in_sample = unit_rows(embeddings)
    else:  # image-only features: centre before cosines
        in_sample = unit_rows(embeddings - embeddings.mean(axis=0, keepdims=True))
    heldout_init = None if standardize or head_init is None else head_init[:n_classes]
    return Features(in_sample=in_sample, heldout=in_sample if heldout is None else heldout,
                    head_init=head_init, heldout_init=heldout_init)


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
