"""Input checks shared by every public function: one place that says what is wrong and where."""

from __future__ import annotations

import numbers
import warnings

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute of an estimator is read before ``fit``."""


def check_embeddings(embeddings, *, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 array of shape (N, D).

    Raises ``TypeError`` for non-numeric input and ``ValueError`` for a wrong shape,
    non-finite values or rows of zero norm (which have no direction to compare).
    """
    if hasattr(embeddings, "detach"):  # a torch tensor
        embeddings = embeddings.detach().cpu().numpy()
    array = np.asarray(embeddings)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a numeric array; got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D); got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} must be finite; rows {_preview(bad)} contain NaN or inf ({bad.size} rows)"
        )
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        raise ValueError(f"{name} must have non-zero rows; rows {_preview(bad)} are all zeros")
    return array


def check_labels(labels, *, n_samples: int | None = None, n_classes: int | None = None,
                 name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an int64 array of shape (N,) with values in [0, n_classes).

    Floats holding whole numbers are accepted; anything else non-integer is a ``TypeError``.
    """
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ints; got shape {array.shape}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be integers; got dtype {array.dtype}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise TypeError(
                f"{name} must be integers; got non-integer values of dtype {array.dtype}")
    array = array.astype(np.int64)
    if n_samples is not None and array.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have one entry per sample ({n_samples}); got {array.shape[0]}")
    if array.size and array.min() < 0:
        bad = np.flatnonzero(array < 0)
        raise ValueError(f"{name} must be ints in [0, K); rows {_preview(bad)} are negative")
    if n_classes is not None and array.size and array.max() >= n_classes:
        bad = np.flatnonzero(array >= n_classes)
        raise ValueError(
            f"{name} must be ints in [0, {n_classes}); rows {_preview(bad)} are >= {n_classes}"
        )
    return array


def check_n_classes(labels: np.ndarray, class_embeddings: np.ndarray | None) -> int:
    """Return K, the number of classes, from labels and optional (K, D) class embeddings.

    Fewer than 2 classes is a ``ValueError``; a class present in ``class_embeddings`` but
    absent from ``labels``, or a class with fewer than 3 samples, warns and goes on.
    """
    n_classes = int(labels.max()) + 1 if class_embeddings is None else class_embeddings.shape[0]
    if class_embeddings is not None and labels.max() >= n_classes:
        raise ValueError(
            f"labels must be ints in [0, {n_classes}) to match class_embeddings of shape "
            f"{class_embeddings.shape}; got max label {labels.max()}"
        )
    counts = np.bincount(labels, minlength=n_classes)
    if (counts > 0).sum() < 2:
        raise ValueError(f"labels must contain at least 2 classes; got {(counts > 0).sum()}")
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        warnings.warn(f"classes {_preview(absent, 20)} have no samples in labels"
                      f"{_count(absent)}", UserWarning, stacklevel=3)
    tiny = np.flatnonzero((counts > 0) & (counts < 3))
    if tiny.size:
        warnings.warn(
            f"classes {_preview(tiny, 20)} have fewer than 3 samples{_count(tiny)}; their "
            "scores are unreliable", UserWarning, stacklevel=3,
        )
    return n_classes


def check_random_state(random_state) -> np.random.Generator:
    """Turn None, an int or a Generator into a ``numpy.random.Generator``."""
    if isinstance(random_state, numbers.Integral) and random_state < 0:
        raise ValueError(f"random_state must be an int >= 0; got {random_state}")
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator; got {type(random_state).__name__}"
    )


def check_option(value, options, *, name: str):
    """Return ``value`` if it is one of ``options``; else a ValueError listing them."""
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}; got {value!r}")
    return value


def _count(indices: np.ndarray, limit: int = 20) -> str:
    return f" ({indices.size} classes)" if indices.size > limit else ""


def _preview(indices: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return f"[{shown}{', ...' if indices.size > limit else ''}]"
