"""Zero-shot: the image-text cosine softmax and the label scores it gives on its own.

Class text embeddings (K, D), e.g. prompt-ensembled CLIP text rows, are compared with each
image by cosine; ``softmax(T * cos)`` with one temperature ``T`` fitted to the given labels'
likelihood is the zero-shot class posterior. No head is trained, so it works on any N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import unit_rows
from .calibration import Calibration, calibrate_error_probabilities
from .flag_choice import FlagChoice
from .flagging import CALIBRATED_RULE, Flags, flag_issues
from .noise_model import (compute_error_probabilities, count_errors_per_class,
                          estimate_label_transitions)

# search range of log T: T from about 0.05 to 22,000 (CLIP's own is 100 on cosines)
_LOG_T_BOUNDS = (-3.0, 10.0)


@dataclass(frozen=True)
class ZeroShot:
    """The zero-shot posterior of N samples over K classes.

    cosines : (N, K) float64 image-text cosines; temperature : T of ``softmax(T * cos)``;
    log_probs : (N, K) float64 its log-probabilities; labels : (N,) the given labels.
    """

    cosines: np.ndarray
    temperature: float
    log_probs: np.ndarray
    labels: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        """(N, K) float32 zero-shot class probabilities."""
        return np.exp(self.log_probs).astype(np.float32)

    @property
    def given_prob(self) -> np.ndarray:
        """(N,) probability of the given label."""
        return np.exp(self.log_probs[np.arange(self.labels.size), self.labels])

    @property
    def margin(self) -> np.ndarray:
        """(N,) given label's logit minus the largest other logit (``T * cos`` units)."""
        logits = self.temperature * self.cosines
        rows = np.arange(self.labels.size)
        others = logits.copy()
        others[rows, self.labels] = -np.inf
        return logits[rows, self.labels] - others.max(axis=1)

    @property
    def signed_entropy(self) -> np.ndarray:
        """(N,) entropy in nats, positive where the argmax is the given label, else negative
        (the one-epoch case of SEI's signed entropy)."""
        probs = np.exp(self.log_probs)
        entropy = -(probs * self.log_probs).sum(axis=1)
        return np.where(self.log_probs.argmax(axis=1) == self.labels, entropy, -entropy)

    @property
    def score_columns(self) -> dict:
        """The issues table's zero-shot score columns: name -> (N,)."""
        return {"zero_shot_prob": self.given_prob, "zero_shot_margin": self.margin,
                "zero_shot_signed_entropy": self.signed_entropy}

    @property
    def histories(self) -> tuple:
        """(entropy, agreement, given-prob) histories (1, N): the zero-shot's one "epoch"."""
        return (np.abs(self.signed_entropy)[None].astype(np.float16),
                (self.probs.argmax(axis=1) == self.labels)[None],
                self.given_prob[None].astype(np.float16))


def compute_text_cosines(embeddings, class_embeddings) -> np.ndarray:
    """(N, K) float64 cosines between image rows (N, D) and class text rows (K, D), both
    taken as given (CLIP's space is not centred)."""
    return unit_rows(np.asarray(embeddings, dtype=np.float32)).astype(np.float64) @ (
        unit_rows(np.asarray(class_embeddings, dtype=np.float32)).astype(np.float64).T)


def log_softmax(logits) -> np.ndarray:
    """Row-wise log-softmax of (N, K) logits, float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fit_temperature(cosines, labels) -> float:
    """The T maximising the given labels' mean log-likelihood under ``softmax(T * cosines)``.

    cosines : (N, K); labels : (N,) ints in [0, K). The likelihood is concave in T, so a
    bounded scalar search on log T finds its maximum.
    """
    from scipy.optimize import minimize_scalar

    rows = np.arange(labels.size)

    def loss(log_t):
        return -log_softmax(np.exp(log_t) * cosines)[rows, labels].mean()

    best = minimize_scalar(loss, bounds=_LOG_T_BOUNDS, method="bounded",
                           options={"xatol": 1e-3})
    return float(np.exp(best.x))


def compute_zero_shot(embeddings, labels, class_embeddings) -> ZeroShot:
    """The zero-shot posterior of ``embeddings`` (N, D) against ``class_embeddings`` (K, D),
    its temperature fitted to the given ``labels`` (N,). Trusts validated input."""
    labels = np.asarray(labels, dtype=np.int64)
    cosines = compute_text_cosines(embeddings, class_embeddings)
    temperature = fit_temperature(cosines, labels)
    return ZeroShot(cosines=cosines, temperature=temperature,
                    log_probs=log_softmax(temperature * cosines), labels=labels)


def flag_zero_shot(zero_shot: ZeroShot, *, n_classes: int, rng, rule: str,
                   choice: FlagChoice) -> tuple[np.ndarray, Flags, Calibration]:
    """Label scores, flags and calibration of ``method="zero_shot"``.

    The label score is the given label's zero-shot probability. The zero-shot posterior never
    saw a label (only its one temperature did), so it is flagged as held-out heads are:
    Bayes error probabilities under confident learning's transitions with ``rule`` "count",
    calibrated ones (:func:`clipsei.engine.calibration.calibrate_error_probabilities`) with
    "calibrated" (:func:`clipsei.engine.flagging.flag_issues`). Returns
    ``(label_scores (N,), flags, calibration)``.
    """
    probs, labels = np.exp(zero_shot.log_probs), zero_shot.labels
    label_scores = zero_shot.given_prob
    transitions = estimate_label_transitions(probs, labels)
    calibration = calibrate_error_probabilities(probs, labels, rng=rng, transitions=transitions)
    error_probs = (calibration.error_probs if rule == CALIBRATED_RULE else
                   compute_error_probabilities(probs, labels, transitions))
    flags = flag_issues(label_scores, labels, n_classes=n_classes, rule=rule,
                        percentile=99.0, threshold_reference=None, threshold_scores=None,
                        class_error_counts=count_errors_per_class(probs, labels),
                        error_probs=error_probs, choice=choice, rng=rng)
    return label_scores, flags, calibration
