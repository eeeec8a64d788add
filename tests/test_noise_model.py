import numpy as np
import pytest

from clipsei.engine.noise_model import (compute_error_probabilities, count_errors_per_class,
                                        estimate_error_rate, estimate_label_transitions)


def test_confident_learning_count_matches_planted_errors(rng):
    n_samples, n_classes = 400, 3
    true = rng.integers(0, n_classes, n_samples)
    probs = np.full((n_samples, n_classes), 0.1)
    probs[np.arange(n_samples), true] = 0.8
    given = true.copy()
    flipped = rng.choice(n_samples, 40, replace=False)
    given[flipped] = (given[flipped] + 1) % n_classes
    assert estimate_error_rate(probs, given) == pytest.approx(0.1)
    assert estimate_error_rate(probs, true) == 0.0
    per_class = count_errors_per_class(probs, given)
    np.testing.assert_array_equal(per_class, np.bincount(given[flipped], minlength=n_classes))
    assert per_class.sum() == round(estimate_error_rate(probs, given) * n_samples)


def test_label_transitions_recover_planted_flips(rng):
    true = rng.integers(0, 3, 3000)
    given = true.copy()
    flip = (true == 0) & (rng.random(true.size) < 0.3)
    given[flip] = 1
    probs = np.eye(3)[true] * 0.9 + 0.1 / 3  # a good classifier of the true class
    transitions = estimate_label_transitions(probs, given)
    np.testing.assert_allclose(transitions.sum(axis=1), 1.0)
    assert transitions[0, 1] == pytest.approx(flip.sum() / (true == 0).sum(), abs=0.02)
    assert transitions[1, 1] == pytest.approx(1.0) and transitions[2, 2] == pytest.approx(1.0)


def test_error_probabilities_follow_bayes():
    transitions = np.array([[0.7, 0.3], [0.0, 1.0]])  # class 0 is labelled 1 30% of the time
    class_probs = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    labels = np.array([1, 1, 1, 0])
    errors = compute_error_probabilities(class_probs, labels, transitions)
    # P(true 1 | x, given 1) = 0.5 * 1.0 / (0.5 * 0.3 + 0.5 * 1.0) for the third sample
    np.testing.assert_allclose(errors, [0.0, 1.0, 1 - 0.5 / 0.65, 0.0])
