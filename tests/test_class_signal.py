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
    assert not signal.too_few_samples and "no better than chance" in signal.warning


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
                                     "informative", "too_few_samples", "n"}



def test_a_perfect_match_on_two_images_per_class_says_too_few_samples():
    # two predictors (heads and neighbour vote) as in a scan: 4 samples cannot beat chance
    labels = np.array([0, 0, 1, 1])
    signal = compute_class_signal([_one_hot_probs(labels, 2)] * 2, labels)
    assert signal.auc == 1.0 and signal.heldout_accuracy == 1.0
    assert not signal.informative and signal.too_few_samples
    assert "too few samples" in signal.warning and "no better than chance" not in signal.warning
    assert "n=4" in signal.warning


@pytest.mark.parametrize("per_class, too_few", [(2, True), (20, False)])
def test_too_few_samples_only_where_a_perfect_match_could_not_pass(per_class, too_few):
    labels = np.repeat([0, 1], per_class)
    rng = np.random.default_rng(per_class)
    chance = compute_class_signal([rng.dirichlet(np.ones(2), labels.size)] * 2, labels)
    assert not chance.informative and chance.too_few_samples is too_few
    perfect = compute_class_signal([_one_hot_probs(labels, 2)] * 2, labels)
    assert perfect.informative is not too_few and perfect.too_few_samples is too_few
