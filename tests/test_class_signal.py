import numpy as np
import pytest

from clipsei.engine.class_signal import compute_class_signal


def test_predictions_independent_of_labels_are_not_informative():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    signal = compute_class_signal(rng.integers(0, 2, 1000), labels)
    assert not signal.informative and "nothing was flagged" in signal.warning
    assert signal.chance_rate == pytest.approx(0.5, abs=0.02)


def test_always_the_majority_is_not_informative():
    labels = np.array([0] * 90 + [1] * 10)
    signal = compute_class_signal(np.zeros(100, int), labels)
    assert signal.heldout_accuracy == signal.majority_rate == signal.chance_rate == 0.9
    assert not signal.informative


def test_accurate_predictions_are_informative():
    labels = np.array([0, 1, 2] * 100)
    predicted = labels.copy()
    predicted[:60] = (predicted[:60] + 1) % 3
    signal = compute_class_signal(predicted, labels)
    assert signal.informative and signal.warning is None
    assert signal.accuracy_lower_bound < signal.heldout_accuracy == pytest.approx(0.8)
    assert set(signal.as_dict()) == {"heldout_accuracy", "majority_rate", "chance_rate",
                                     "accuracy_lower_bound", "informative", "n"}
