"""Entropy, signed entropy and their integrals over training epochs (numpy only).

Every score here follows one convention: **lower = more likely mislabeled**.

Per epoch and sample the training loop yields four statistics of the softmax over the
head's logits (see :func:`compute_epoch_statistics`): the Shannon entropy ``H`` in nats,
whether the given label's probability is at least the best other class's ("agrees"), the
logit margin (given-label logit minus the largest other logit) and the given-label
probability. The scores integrate them over epochs:

- ``sei``: Signed Entropy Integral of Li et al. (ICML 2026), ``mean_e sign_e * H_e`` with
  ``sign = +1`` when the prediction agrees with the given label and ``-1`` otherwise.
- ``aum``: Area Under the Margin of Pleiss et al. (2020), the mean logit margin.
- ``entropy_integral``: ``-mean_e H_e`` (uncertain samples are suspicious).
- ``given_prob``: mean given-label probability.
- ``forgetting``: minus the number of agree -> disagree transitions (Toneva et al. 2019);
  a sample never learned counts as forgotten at every epoch.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass, fields

from .._validation import check_labels

SCORE_NAMES = ("sei", "aum", "entropy_integral", "given_prob", "forgetting")


def _as_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, possibly on a GPU
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def compute_epoch_statistics(logits, labels) -> dict[str, np.ndarray]:
    """Entropy, agreement, margin and given-label probability of one epoch's logits.

    Parameters
    ----------
    logits : (N, K) float, unnormalised class scores (torch tensors are accepted).
    labels : (N,) int in [0, K), the given labels.

    Returns
    -------
    dict with ``entropy`` (N,) float32 nats, ``agrees`` (N,) bool, ``margin`` (N,) float32
    (logit units), ``given_prob`` (N,) float32 and ``probs`` (N, K) float32, the softmax.
    """
    logits = _as_numpy(logits).astype(np.float32, copy=False)
    labels = _as_numpy(labels).astype(np.int64, copy=False)
    rows = np.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    probs = np.exp(log_probs)
    entropy = -(probs * log_probs).sum(axis=1)
    given_logit = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    best_other = others.max(axis=1)
    return {
        "entropy": np.maximum(entropy, 0.0).astype(np.float32),
        "agrees": given_logit >= best_other,
        "margin": (given_logit - best_other).astype(np.float32),
        "given_prob": probs[rows, labels].astype(np.float32),
        "probs": probs.astype(np.float32, copy=False),
    }


def compute_entropy(probs) -> np.ndarray:
    """Shannon entropy in nats of each row of ``probs`` (N, K) -> (N,) float32."""
    probs = _as_numpy(probs).astype(np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K); got shape {probs.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)
    return (-terms.sum(axis=1)).astype(np.float32)


def compute_sei_scores(entropy_history, agreement_history) -> np.ndarray:
    """Paper-faithful Signed Entropy Integral, (E, N) entropy and agreement -> (N,) float32.

    ``mean_e sign_e * H_e`` with ``sign = +1`` where the prediction agrees with the given
    label and ``-1`` where it does not. Lower = more likely mislabeled.
    """
    entropy_history = np.asarray(entropy_history, dtype=np.float32)
    agreement_history = np.asarray(agreement_history, dtype=bool)
    if entropy_history.shape != agreement_history.shape or entropy_history.ndim != 2:
        raise ValueError(
            "entropy_history and agreement_history must both be (E, N); got "
            f"{entropy_history.shape} and {agreement_history.shape}"
        )
    signs = np.where(agreement_history, 1.0, -1.0).astype(np.float32)
    return (signs * entropy_history).mean(axis=0)


def compute_aum_scores(margin_history) -> np.ndarray:
    """Area Under the Margin: mean over epochs of the logit margin, (E, N) -> (N,) float32."""
    return np.asarray(margin_history, dtype=np.float32).mean(axis=0)


def compute_forgetting_scores(agreement_history) -> np.ndarray:
    """Minus the number of forgetting events per sample, (E, N) bool -> (N,) float32.

    A forgetting event is an epoch where the sample agreed and the next one where it does
    not. A sample that never agrees gets ``-E`` (the most suspicious value).
    """
    agreement_history = np.asarray(agreement_history, dtype=bool)
    forgets = (agreement_history[:-1] & ~agreement_history[1:]).sum(axis=0)
    never_learned = ~agreement_history.any(axis=0)
    return -np.where(never_learned, agreement_history.shape[0], forgets).astype(np.float32)


def compute_dynamics_scores(entropy_history, agreement_history, margin_history,
                            given_prob_history) -> dict[str, np.ndarray]:
    """All scores of :data:`SCORE_NAMES` from (E, N) histories, each (N,) float32."""
    entropy_history = np.asarray(entropy_history, dtype=np.float32)
    return {
        "sei": compute_sei_scores(entropy_history, agreement_history),
        "aum": compute_aum_scores(margin_history),
        "entropy_integral": -entropy_history.mean(axis=0),
        "given_prob": np.asarray(given_prob_history, dtype=np.float32).mean(axis=0),
        "forgetting": compute_forgetting_scores(agreement_history),
    }


@dataclass(frozen=True)
class DynamicsScores:
    """The per-sample scores of one set of samples, each (N,) float32 (lower = suspect)."""

    sei: np.ndarray
    aum: np.ndarray
    entropy_integral: np.ndarray
    given_prob: np.ndarray
    forgetting: np.ndarray

    @classmethod
    def from_histories(cls, dynamics) -> "DynamicsScores":
        """Scores from a :class:`clipsei.engine.heads.TrainingDynamics`' (E, N) histories."""
        return cls(**compute_dynamics_scores(dynamics.entropy_history,
                                             dynamics.agreement_history,
                                             dynamics.margin_history,
                                             dynamics.given_prob_history))

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{name: (N,) scores}`` in :data:`SCORE_NAMES` order."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def map(self, function) -> "DynamicsScores":
        """A new instance with ``function`` applied to every score array."""
        return DynamicsScores(**{name: function(name, values)
                                 for name, values in self.as_dict().items()})

    @classmethod
    def combine(cls, parts, function) -> "DynamicsScores":
        """Each score from ``function(list of that score's arrays in parts)``."""
        return cls(**{name: function([getattr(part, name) for part in parts])
                      for name in SCORE_NAMES})


class SEIRecorder:
    """Collect SEI, AUM and related scores inside any training loop.

    Call :meth:`update` with each batch's logits, the batch's given labels and the
    samples' integer ids (their row in the dataset); every call is one observation of
    those samples, as in the ``aum`` package's calculator. Then :meth:`scores` returns
    the per-sample means, with the same formulas the engine uses. Memory is O(n_samples):
    only running sums are kept.

    Examples
    --------
    >>> recorder = SEIRecorder()
    >>> for epoch in range(n_epochs):                       # doctest: +SKIP
    ...     for images, targets, ids in loader:
    ...         logits = model(images)
    ...         recorder.update(logits, targets, ids)
    >>> scores = recorder.scores()                           # doctest: +SKIP
    """

    _SUMS = ("signed_entropy", "entropy", "margin", "given_prob")

    def __init__(self):
        self._sums = {name: np.zeros(0) for name in self._SUMS}
        self._counts = np.zeros(0, dtype=np.int64)
        self._forgets = np.zeros(0, dtype=np.int64)
        self._last_agrees = np.zeros(0, dtype=np.int8)  # -1 unseen, 0 disagreed, 1 agreed
        self._ever_agreed = np.zeros(0, dtype=bool)

    def _grow(self, size: int) -> None:
        extra = size - self._counts.size
        if extra <= 0:
            return
        for name in self._SUMS:
            self._sums[name] = np.concatenate([self._sums[name], np.zeros(extra)])
        self._counts = np.concatenate([self._counts, np.zeros(extra, dtype=np.int64)])
        self._forgets = np.concatenate([self._forgets, np.zeros(extra, dtype=np.int64)])
        self._last_agrees = np.concatenate([self._last_agrees, np.full(extra, -1, np.int8)])
        self._ever_agreed = np.concatenate([self._ever_agreed, np.zeros(extra, dtype=bool)])

    def update(self, logits, targets, sample_ids) -> None:
        """Record one observation for each sample of a batch.

        logits : (B, K) float; targets : (B,) int given labels in [0, K);
        sample_ids : (B,) distinct non-negative ints identifying the samples.
        """
        logits = _as_numpy(logits)
        if logits.ndim != 2:
            raise ValueError(f"logits must be 2-D (B, K); got shape {logits.shape}")
        targets = check_labels(_as_numpy(targets), n_samples=logits.shape[0],
                               n_classes=logits.shape[1], name="targets")
        ids = check_labels(_as_numpy(sample_ids), n_samples=logits.shape[0], name="sample_ids")
        if np.unique(ids).size != ids.size:
            raise ValueError("sample_ids must be distinct within one update")
        self._grow(int(ids.max()) + 1)
        stats = compute_epoch_statistics(logits, targets)
        signs = np.where(stats["agrees"], 1.0, -1.0)
        self._sums["signed_entropy"][ids] += signs * stats["entropy"]
        self._sums["entropy"][ids] += stats["entropy"]
        self._sums["margin"][ids] += stats["margin"]
        self._sums["given_prob"][ids] += stats["given_prob"]
        self._counts[ids] += 1
        agrees = stats["agrees"].astype(np.int8)
        self._forgets[ids] += (self._last_agrees[ids] == 1) & (agrees == 0)
        self._last_agrees[ids] = agrees
        self._ever_agreed[ids] |= stats["agrees"]

    def scores(self) -> dict[str, np.ndarray]:
        """Per-sample scores of :data:`SCORE_NAMES`, each (n_ids,) float32; NaN if never seen."""
        if not self._counts.any():
            raise ValueError("SEIRecorder.scores() called before any update()")
        with np.errstate(invalid="ignore", divide="ignore"):
            counts = np.where(self._counts > 0, self._counts, np.nan)
            forgetting = np.where(self._ever_agreed, self._forgets, self._counts)
            result = {
                "sei": self._sums["signed_entropy"] / counts,
                "aum": self._sums["margin"] / counts,
                "entropy_integral": -self._sums["entropy"] / counts,
                "given_prob": self._sums["given_prob"] / counts,
                "forgetting": np.where(self._counts > 0, -forgetting, np.nan),
            }
        return {name: values.astype(np.float32) for name, values in result.items()}
