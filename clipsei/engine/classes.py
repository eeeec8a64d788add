"""Present classes: the engine works on the classes that have samples, then expands back.

A class value without samples (a stray label value, a class prompt nobody carries) must not
change anyone's scores, so labels are compacted to ``0 .. K'-1`` before any stage runs and
per-class outputs are expanded to all K classes at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassIndex:
    """present : (K',) int64 original ids of the classes with samples; n_classes : K."""

    present: np.ndarray
    n_classes: int

    @classmethod
    def from_labels(cls, labels, n_classes: int) -> "ClassIndex":
        return cls(present=np.flatnonzero(np.bincount(labels, minlength=n_classes)),
                   n_classes=int(n_classes))

    @property
    def is_compact(self) -> bool:
        return self.present.size == self.n_classes

    def compact(self, labels) -> np.ndarray:
        """(N,) labels renumbered to ``0 .. K'-1``."""
        if self.is_compact:
            return labels
        return np.searchsorted(self.present, labels).astype(np.int64)

    def original(self, class_ids) -> np.ndarray:
        """Compact class ids -> the original ones."""
        return self.present[np.asarray(class_ids)]

    def expand_columns(self, values) -> np.ndarray:
        """(N, K') -> (N, K), zeros in the columns of absent classes."""
        if self.is_compact:
            return values
        expanded = np.zeros((values.shape[0], self.n_classes), dtype=values.dtype)
        expanded[:, self.present] = values
        return expanded

    def expand(self, values, fill) -> np.ndarray:
        """(K',) -> (K,), ``fill`` for absent classes."""
        values = np.asarray(values)
        if self.is_compact:
            return values
        dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
        expanded = np.full(self.n_classes, fill, dtype=dtype)
        expanded[self.present] = values
        return expanded
