import numpy as np
import pytest

from clipsei.engine.class_signal import compute_class_signal


def _one_hot_probs(classes, n_classes, sharpness=0.8):
    probs = np.full((classes.size, n_classes), (1 - sharpness) / (n_classes - 1))
    probs[np.arange(classes.size), classes] = sharpness
    return probs


def test_probabilities_independent_of_labels_are_not_informative():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 1000)
    signal = compute_class_signal([rng.dirichlet(np.ones(3), 1000)], labels)
    assert not signal.informative and "nothing was flagged" in signal.warning
    assert signal.auc == pytest.approx(0.5, abs=0.03) and signal.auc_lower_bound < 0.5


def test_always_the_majority_is_not_informative():
    labels = np.array([0] * 90 + [1] * 10)
    signal = compute_class_signal([_one_hot_probs(np.zeros(100, int), 2)], labels)
    assert signal.heldout_accuracy == signal.majority_rate == signal.chance_rate == 0.9
    assert signal.auc == 0.5 and not signal.informative


def test_ranking_beyond_the_majority_is_informative():
    # every prediction is the majority class, but the probabilities still rank the minority
    labels = np.array([0] * 300 + [1] * 100)
    probs = np.zeros((400, 2))
    probs[:, 1] = np.where(labels == 1, 0.4, 0.2) + np.random.default_rng(0).normal(0, 0.02, 400)
    probs[:, 0] = 1 - probs[:, 1]
    signal = compute_class_signal([probs], labels)
    assert signal.heldout_accuracy == signal.majority_rate == 0.75
    assert signal.informative and signal.warning is None


def test_accurate_predictions_are_informative():
    labels = np.array([0, 1, 2] * 100)
    predicted = labels.copy()
    predicted[:60] = (predicted[:60] + 1) % 3
    signal = compute_class_signal([_one_hot_probs(predicted, 3)], labels)
    assert signal.informative and signal.heldout_accuracy == pytest.approx(0.8)
    assert signal.accuracy_lower_bound < signal.heldout_accuracy
    assert set(signal.as_dict()) == {"heldout_accuracy", "majority_rate", "chance_rate",
                                     "accuracy_lower_bound", "auc", "auc_lower_bound",
                                     "informative", "n"}
