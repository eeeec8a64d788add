"""Do the embeddings carry class information? Held-out accuracy against chance agreement.

Out-of-sample predictions made from embeddings without class information are independent of
the given labels, so they agree with them at the chance rate ``sum_k p_pred(k) p_label(k)``
(at most the majority rate). The embeddings are informative when the accuracy's one-sided
lower bound exceeds that rate. The majority rate itself is too strict a bar under heavy
noise on imbalanced classes (two classes 90:10 with 40% symmetric noise: the best possible
accuracy against the given labels is 0.60, the majority rate 0.58).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

# one-sided confidence of the accuracy's lower bound
CLASS_SIGNAL_CONFIDENCE = 0.99


@dataclass(frozen=True)
class ClassSignal:
    """heldout_accuracy : share of samples whose out-of-sample prediction is the given label;
    majority_rate : share of the most frequent given label; chance_rate : the accuracy of
    predictions independent of the labels; accuracy_lower_bound : Wilson lower bound of the
    accuracy; informative : the bound exceeds the chance rate; n : N."""

    heldout_accuracy: float
    majority_rate: float
    chance_rate: float
    accuracy_lower_bound: float
    informative: bool
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def warning(self) -> str | None:
        """A one-line explanation for the user where the embeddings carry no class signal."""
        if self.informative:
            return None
        return (f"nothing was flagged: the embeddings carry no class information (held-out "
                f"accuracy {self.heldout_accuracy:.1%} is not above chance "
                f"{self.chance_rate:.1%}, n={self.n})")


def compute_class_signal(predicted, labels, *,
                         confidence: float = CLASS_SIGNAL_CONFIDENCE) -> ClassSignal:
    """Whether out-of-sample ``predicted`` (N,) classes agree with ``labels`` (N,) more than
    chance: the one-sided Wilson lower bound of the accuracy at ``confidence`` must exceed
    the chance agreement of the two marginals."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    n = labels.size
    n_classes = int(max(predicted.max(), labels.max())) + 1
    label_shares = np.bincount(labels, minlength=n_classes) / n
    chance = float(label_shares @ (np.bincount(predicted, minlength=n_classes) / n))
    accuracy = float((predicted == labels).mean())
    bound = _wilson_lower_bound(accuracy, n, NormalDist().inv_cdf(confidence))
    return ClassSignal(heldout_accuracy=accuracy, majority_rate=float(label_shares.max()),
                       chance_rate=chance, accuracy_lower_bound=bound,
                       informative=bool(bound > chance), n=int(n))


def _wilson_lower_bound(share: float, n: int, z: float) -> float:
    centre = share + z * z / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))
