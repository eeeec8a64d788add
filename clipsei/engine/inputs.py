"""The estimator's data inputs: checked once, labels compacted to the present classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_embeddings, check_labels, check_n_classes
from .features import check_embedding_rows
from .classes import ClassIndex


@dataclass(frozen=True)
class FitInputs:
    """embeddings : (N, D) float32 as given; labels : (N,) int64 in [0, K') (present classes
    only); original_labels : (N,) int64 as given; classes : the present classes of K;
    head_init : (K' or K' + 1, D) float32 text rows of the present classes (then "other"),
    or None."""

    embeddings: np.ndarray
    labels: np.ndarray
    original_labels: np.ndarray
    classes: ClassIndex
    head_init: np.ndarray | None


def check_fit_inputs(embeddings, labels, class_embeddings, other_embedding) -> FitInputs:
    """Validate the arrays of :meth:`LabelIssueDetector.fit` and compact the classes."""
    x = check_embedding_rows(embeddings)
    y = check_labels(labels, n_samples=x.shape[0])
    head_init = None
    if class_embeddings is not None:
        head_init = check_embeddings(class_embeddings, name="class_embeddings")
        if head_init.shape[1] != x.shape[1]:
            raise ValueError(f"class_embeddings must be (K, {x.shape[1]}) to match embeddings; "
                             f"got shape {head_init.shape}")
    classes = ClassIndex.from_labels(y, check_n_classes(y, head_init))
    if head_init is not None:
        head_init = head_init[classes.present]
    if other_embedding is not None:
        if head_init is None:
            raise ValueError("other_embedding needs class_embeddings as well")
        other = check_embeddings(np.asarray(other_embedding).reshape(1, -1),
                                 name="other_embedding")
        if other.shape[1] != x.shape[1]:
            raise ValueError(f"other_embedding must have {x.shape[1]} values; "
                             f"got {other.shape[1]}")
        head_init = np.vstack([head_init, other])
    return FitInputs(embeddings=x, labels=classes.compact(y), original_labels=y,
                     classes=classes, head_init=head_init)
