"""What the user asked of the flags: a target precision, a review budget and verified rows
(:class:`FlagChoice`), and the forms ``trusted=`` takes (a mask, row indices, or a mapping
to verified labels and, for an audit sample, inclusion probabilities)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlagChoice:
    """What the user asked for. target_precision : flag as many as keep the expected
    precision at least this (needs error probabilities); max_flags : at most this many, the
    most likely first (alone: exactly this many); trusted : (N,) bool or indices of verified
    rows, never flagged; known_errors : (N,) bool or indices of the verified rows whose
    verified label differs from the given one (None: every verified label as given);
    inclusion_probability : (N,) float or None, each verified row's chance of being drawn
    where they are an audit sample (:mod:`clipsei.engine.audit`)."""

    target_precision: float | None = None
    max_flags: int | None = None
    trusted: object = None
    known_errors: object = None
    inclusion_probability: object = None

    def trusted_mask(self, n_samples: int) -> np.ndarray:
        """(N,) bool: the verified rows."""
        return as_trusted_mask(self.trusted, n_samples)

    def known_error_mask(self, n_samples: int) -> np.ndarray:
        """(N,) bool: the verified rows whose label is known to be wrong."""
        return as_trusted_mask(self.known_errors, n_samples) & self.trusted_mask(n_samples)


def as_trusted_mask(trusted, n_samples: int) -> np.ndarray:
    """(N,) bool from None, an (N,) bool mask or row indices; a one-line ``ValueError``
    names what is wrong."""
    mask = np.zeros(n_samples, dtype=bool)
    if trusted is None:
        return mask
    values = np.asarray(trusted)
    if values.dtype == bool:
        if values.shape != (n_samples,):
            raise ValueError(f"trusted must be a ({n_samples},) bool mask or row indices; got "
                             f"a bool array of shape {values.shape}")
        return values.copy()
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"trusted must be a ({n_samples},) bool mask or row indices; got "
                         f"{values.dtype} of shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= n_samples):
        raise ValueError(f"trusted indices must be in [0, {n_samples}); got {values.min()} .. "
                         f"{values.max()}")
    mask[values] = True
    return mask


def split_trusted(trusted, given_labels) -> tuple[np.ndarray, np.ndarray]:
    """((N,) bool verified rows, (N,) bool verified rows whose label is wrong) from None, a
    bool mask or row indices (every label verified as given) or a mapping ``{row: verified
    label}`` (labels in the encoding of the (N,) ``given_labels``; a value may also be a
    ``(verified label, inclusion probability)`` pair, see :func:`split_inclusion`)."""
    given_labels = np.asarray(given_labels)
    if not isinstance(trusted, Mapping):
        mask = as_trusted_mask(trusted, given_labels.size)
        return mask, np.zeros(given_labels.size, dtype=bool)
    rows = np.fromiter((int(row) for row in trusted), dtype=np.int64, count=len(trusted))
    mask = as_trusted_mask(rows, given_labels.size)
    known = np.zeros(given_labels.size, dtype=bool)
    known[rows] = [_label_of(verified) != given_labels[row] for row, verified in
                   zip(rows, trusted.values())]
    return mask, known


def _label_of(value):
    return value[0] if isinstance(value, tuple) else value


def split_inclusion(trusted, n_samples: int):
    """(N,) float inclusion probabilities (0 off the verified rows) where ``trusted`` maps
    rows to ``(verified label, inclusion probability)`` pairs (an audit sample), else None.
    A one-line ``ValueError`` names a row whose probability is not in (0, 1]."""
    if not isinstance(trusted, Mapping) or not any(isinstance(v, tuple)
                                                   for v in trusted.values()):
        return None
    probabilities = np.zeros(n_samples)
    for row, value in trusted.items():
        if not isinstance(value, tuple) or len(value) != 2:
            raise ValueError(f"trusted[{row}] must be a (label, inclusion probability) pair "
                             f"like the other rows; got {value!r}")
        probability = float(value[1])
        if not 0 < probability <= 1:
            raise ValueError(f"trusted[{row}]: inclusion probability must be in (0, 1]; "
                             f"got {value[1]!r}")
        probabilities[int(row)] = probability
    return probabilities


def select_trusted(trusted, n_samples: int, rows=None):
    """``trusted`` (as :func:`split_trusted` takes it) checked against ``n_samples`` rows and
    restricted to ``rows`` (kept row indices, renumbered 0..len(rows)-1; None: all): an (M,)
    bool mask, or a ``{row: verified label}`` mapping for a mapping."""
    if not isinstance(trusted, Mapping):
        mask = as_trusted_mask(trusted, n_samples)
        return mask if rows is None else mask[rows]
    as_trusted_mask(np.fromiter(trusted, dtype=np.int64, count=len(trusted)), n_samples)
    rows = np.arange(n_samples) if rows is None else np.asarray(rows)
    return {new: trusted[int(old)] for new, old in enumerate(rows) if int(old) in trusted}
