"""Do the embeddings carry class information? Out-of-sample class probabilities against the
given labels.

Class probabilities that never saw a sample's label (cross-fitted heads, or the leave-one-out
neighbour vote) are independent of that label when the embeddings carry no class
information, so for each class ``k`` the probability of ``k`` ranks the samples labelled
``k`` above the others no better than chance (one-vs-rest AUC 0.5). The embeddings are
informative when, for any of the predictors, the prevalence-weighted AUC's one-sided lower
bound (its standard error under that null, Mann-Whitney) exceeds 0.5, or when the first
predictor's accuracy has a lower bound (Wilson) above chance agreement, ``sum_k p_pred(k)
p_label(k)``; the confidence is split evenly between these tests. Neither test alone suffices:
under heavy noise on imbalanced classes the argmax may be the majority class for every sample
while the ranking is informative, and the ranking may miss what the argmax shows.

On a small sample even predictions that match every label cannot pass either test; the
result then says that there were too few samples to tell, not that the match was at chance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

# one-sided confidence that "informative" is not chance (split over the predictors tested)
CLASS_SIGNAL_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ClassSignal:
    """heldout_accuracy : share of samples whose out-of-sample class is the given label;
    majority_rate : share of the most frequent given label; chance_rate : the accuracy of
    predictions independent of the labels; accuracy_lower_bound : the accuracy's Wilson lower
    bound; auc, auc_lower_bound : the best predictor's one-vs-rest AUC and its lower bound;
    informative : a bound beats chance (see the module docstring); too_few_samples : even
    predictions matching every label would not beat chance at these class sizes, so the
    sample cannot tell either way; n : N."""

    heldout_accuracy: float
    majority_rate: float
    chance_rate: float
    accuracy_lower_bound: float
    auc: float
    auc_lower_bound: float
    informative: bool
    too_few_samples: bool
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def warning(self) -> str | None:
        """A one-line explanation for the user where the embeddings carry no class signal."""
        if self.informative:
            return None
        if self.too_few_samples:
            return (f"nothing was flagged: too few samples (n={self.n}) to tell whether the "
                    f"embeddings carry class information; even predictions matching every label "
                    f"would not beat chance at this size (observed AUC {self.auc:.3f}, accuracy "
                    f"{self.heldout_accuracy:.1%})")
        return (f"nothing was flagged: the embeddings carry no class information (out-of-sample "
                f"predictions match the given labels no better than chance: AUC {self.auc:.3f}, "
                f"accuracy {self.heldout_accuracy:.1%}, majority class {self.majority_rate:.1%}, "
                f"n={self.n})")


def compute_class_signal(probs_by_predictor, labels, *,
                         confidence: float = CLASS_SIGNAL_CONFIDENCE) -> ClassSignal:
    """Class signal of out-of-sample class probabilities, each (N, K), for ``labels`` (N,).

    The accuracy is the first predictor's; the AUC is the best predictor's.
    """
    labels = np.asarray(labels)
    n = labels.size
    z = NormalDist().inv_cdf(1 - (1 - confidence) / (len(probs_by_predictor) + 1))
    aucs = [_weighted_auc(np.asarray(probs), labels, z) for probs in probs_by_predictor]
    auc, auc_bound = max(aucs, key=lambda pair: pair[1])
    predicted = np.asarray(probs_by_predictor[0]).argmax(axis=1)
    n_classes = int(max(predicted.max(), labels.max())) + 1
    label_shares = np.bincount(labels, minlength=n_classes) / n
    chance = float(label_shares @ (np.bincount(predicted, minlength=n_classes) / n))
    accuracy = float((predicted == labels).mean())
    accuracy_bound = _wilson_lower_bound(accuracy, n, z)
    # the bounds of predictions equal to the labels: the best any predictor could reach here
    perfect_auc_bound = 1.0 - z * _null_auc_spread(labels)
    perfect_accuracy_bound = _wilson_lower_bound(1.0, n, z)
    return ClassSignal(
        heldout_accuracy=accuracy, majority_rate=float(label_shares.max()), chance_rate=chance,
        accuracy_lower_bound=accuracy_bound, auc=auc, auc_lower_bound=auc_bound,
        informative=bool(auc_bound > 0.5 or accuracy_bound > chance),
        too_few_samples=bool(np.unique(labels).size > 1 and perfect_auc_bound <= 0.5
                             and perfect_accuracy_bound <= float(label_shares @ label_shares)),
        n=int(n))


def _weighted_auc(probs, labels, z) -> tuple[float, float]:
    """Prevalence-weighted one-vs-rest AUC and its lower bound ``AUC - z * sd`` (null sds
    averaged with the same weights, an upper bound on the sd of the weighted AUC)."""
    auc = 0.0
    for label in np.unique(labels):
        positive, negative = probs[labels == label, label], np.sort(probs[labels != label, label])
        if negative.size == 0:
            continue
        below = np.searchsorted(negative, positive, side="left")
        at_or_below = np.searchsorted(negative, positive, side="right")
        weight = positive.size / labels.size
        auc += weight * float(((below + at_or_below) / 2).mean() / negative.size)
    return auc, float(auc - z * _null_auc_spread(labels))


def _null_auc_spread(labels) -> float:
    """Prevalence-weighted null sd of the one-vs-rest AUCs, which depends on class sizes only."""
    spread = 0.0
    for label in np.unique(labels):
        n_positive = int((labels == label).sum())
        n_negative = labels.size - n_positive
        if n_negative == 0:
            continue
        spread += (n_positive / labels.size) * np.sqrt((n_positive + n_negative + 1)
                                                        / (12 * n_positive * n_negative))
    return float(spread)


def _wilson_lower_bound(share: float, n: int, z: float) -> float:
    centre = share + z * z / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))
