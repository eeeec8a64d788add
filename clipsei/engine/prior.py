"""The zero-shot prior of the default: how much the image-text softmax should count.

The given labels are fitted as a product of experts, ``log p(y) = a * log p_default(y) +
b * log p_text(y) + const`` (softmax over the K classes, ``a, b >= 0``), where ``p_default``
are the default's held-out class probabilities and ``p_text`` the zero-shot posterior. The
prior's share ``s = b / (a + b)`` mixes the fitted product's given-label probability into
the fused label score: ``(1 - s) * fused + s * percentile(p_product(y))``; the weights ``a, b``
keep each expert's scale, so a weak prior moves the product little. It counts only where
adding it raises the held-out likelihood of the given labels by more than twice its
standard error over cross-fitted folds; otherwise the share is 0 and the default unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ranks import percentile_of
from .zero_shot import compute_zero_shot, log_softmax

# held-out gain (mean nats per sample) must exceed this many standard errors
MIN_GAIN_Z = 2.0
_EPS = 1e-6


@dataclass(frozen=True)
class PriorWeight:
    """default_weight ``a``, text_weight ``b`` (fitted on every row); share: the prior's
    weight in the fused score (``b / (a + b)``, or 0 where the gain is not significant);
    heldout_gain : mean held-out log-likelihood gain per sample (nats) and gain_se its
    standard error."""

    default_weight: float
    text_weight: float
    share: float
    heldout_gain: float
    gain_se: float

    def as_dict(self) -> dict:
        return {name: float(getattr(self, name)) for name in (
            "default_weight", "text_weight", "share", "heldout_gain", "gain_se")}


def _negative_log_likelihood(weights, experts, labels):
    """Mean NLL of the given labels under ``softmax(sum_j w_j * experts[j])`` and its gradient.

    experts : (J, N, K) log-probabilities; weights : (J,)."""
    logits = np.tensordot(weights, experts, axes=1)
    log_probs = log_softmax(logits)
    rows = np.arange(labels.size)
    probs = np.exp(log_probs)
    # d/dw_j of -log p(y) = E_p[expert_j] - expert_j[y]
    expected = (experts * probs[None]).sum(axis=2)
    gradient = (expected - experts[:, rows, labels]).mean(axis=1)
    return -log_probs[rows, labels].mean(), gradient


def fit_expert_weights(experts, labels) -> np.ndarray:
    """(J,) non-negative weights of J experts' (J, N, K) log-probabilities that maximise the
    given ``labels``' likelihood (a convex problem; L-BFGS-B with bounds)."""
    from scipy.optimize import minimize

    start = np.ones(experts.shape[0]) / experts.shape[0]
    result = minimize(_negative_log_likelihood, start, args=(experts, labels), jac=True,
                      method="L-BFGS-B", bounds=[(0.0, None)] * experts.shape[0])
    return result.x


def _stack_experts(default_probs, text_log_probs) -> np.ndarray:
    """(2, N, K) float64 log-probabilities: the default's (clipped away from 0), the text's."""
    return np.stack([np.log(np.clip(np.asarray(default_probs, dtype=np.float64), _EPS, 1.0)),
                     np.asarray(text_log_probs, dtype=np.float64)])


def _heldout_log_likelihoods(experts, labels, weights):
    """(N,) the given labels' log-probabilities under the product with ``weights``."""
    logits = np.tensordot(weights, experts, axes=1)
    return log_softmax(logits)[np.arange(labels.size), labels]


def fit_prior_weight(default_probs, text_log_probs, labels, *, n_folds: int = 5,
                     random_state=None) -> PriorWeight:
    """Learn the zero-shot prior's share from the given labels.

    default_probs : (N, K) the default's held-out class probabilities; text_log_probs : (N, K)
    the zero-shot log-posterior; labels : (N,) given labels. On each of ``n_folds`` folds the
    weights are fitted on the other rows with and without the text expert, and the fold's
    log-likelihood gain is recorded; the share is kept only where the mean gain exceeds
    :data:`MIN_GAIN_Z` standard errors.
    """
    labels = np.asarray(labels, dtype=np.int64)
    experts = _stack_experts(default_probs, text_log_probs)
    rng = np.random.default_rng(random_state)
    folds = rng.permutation(labels.size) % max(2, min(n_folds, labels.size))
    gains = np.empty(labels.size)
    for fold in np.unique(folds):
        test, train = folds == fold, folds != fold
        both = fit_expert_weights(experts[:, train], labels[train])
        alone = fit_expert_weights(experts[:1, train], labels[train])
        gains[test] = (_heldout_log_likelihoods(experts[:, test], labels[test], both)
                       - _heldout_log_likelihoods(experts[:1, test], labels[test], alone))
    a, b = fit_expert_weights(experts, labels)
    gain, se = float(gains.mean()), float(gains.std(ddof=1) / np.sqrt(gains.size))
    useful = b > 0 and gain > MIN_GAIN_Z * se
    share = float(b / (a + b)) if useful else 0.0
    return PriorWeight(default_weight=float(a), text_weight=float(b), share=share,
                       heldout_gain=gain, gain_se=se)


@dataclass(frozen=True)
class ZeroShotPrior:
    """The zero-shot prior of one fit: given_prob (N,) the given label's zero-shot
    probability, temperature its softmax's T, weight the learned :class:`PriorWeight`,
    product_log_prob (N,) the given label's log-probability under the fitted product."""

    given_prob: np.ndarray
    temperature: float
    weight: PriorWeight
    product_log_prob: np.ndarray

    def apply(self, label_scores) -> np.ndarray:
        """(N,) ``(1 - share) * label_scores + share * percentile(product_log_prob)``; the
        scores unchanged where the share is 0."""
        share = self.weight.share
        if share == 0.0:
            return label_scores
        product = self.product_log_prob
        return (1.0 - share) * label_scores + share * percentile_of(product, product)

    def as_dict(self) -> dict:
        """JSON-ready summary: the temperature and the weights."""
        return {"temperature": float(self.temperature), **self.weight.as_dict()}


def compute_zero_shot_prior(embeddings, labels, class_embeddings, default_probs, *,
                            random_state=None) -> ZeroShotPrior:
    """The zero-shot prior of ``embeddings`` (N, D) with ``class_embeddings`` (K, D) for the
    given ``labels`` (N,), weighted against ``default_probs`` (N, K) (see
    :func:`fit_prior_weight`). Trusts validated input."""
    zero_shot = compute_zero_shot(embeddings, labels, class_embeddings)
    weight = fit_prior_weight(default_probs, zero_shot.log_probs, labels,
                              random_state=random_state)
    experts = _stack_experts(default_probs, zero_shot.log_probs)
    product = _heldout_log_likelihoods(experts, zero_shot.labels,
                                       np.array([weight.default_weight, weight.text_weight]))
    return ZeroShotPrior(given_prob=zero_shot.given_prob, temperature=zero_shot.temperature,
                         weight=weight, product_log_prob=product)
