import numpy as np
import pandas as pd
import pytest

from clipsei.rank import (align_error_probabilities, build_issues_table, compute_class_cutoffs,
                          compute_cutoff, compute_cutoff_for_count,
                          compute_error_probabilities, compute_expected_f1_count,
                          compute_noise_rate_per_class, count_errors_per_class,
                          estimate_label_transitions, estimate_noise_rate, rank_by_score)


def test_cutoff_rules():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    assert compute_cutoff(scores) == pytest.approx(0.25)
    assert compute_cutoff(scores, rule="percentile", percentile=100) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="cutoff rule must be one of"):
        compute_cutoff(scores, rule="median")
    with pytest.raises(ValueError, match="percentile must be in"):
        compute_cutoff(scores, rule="percentile", percentile=101)
    with pytest.raises(ValueError, match="must not be empty"):
        compute_cutoff([])


@pytest.mark.parametrize("n_flagged", [0, 1, 3, 5])
def test_cutoff_for_count_flags_exactly_that_many(n_flagged):
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    assert (scores < compute_cutoff_for_count(scores, n_flagged)).sum() == n_flagged


def test_confident_learning_count_matches_planted_errors(rng):
    n_samples, n_classes = 400, 3
    true = rng.integers(0, n_classes, n_samples)
    probs = np.full((n_samples, n_classes), 0.1)
    probs[np.arange(n_samples), true] = 0.8
    given = true.copy()
    flipped = rng.choice(n_samples, 40, replace=False)
    given[flipped] = (given[flipped] + 1) % n_classes
    assert estimate_noise_rate(probs, given) == pytest.approx(0.1)
    assert estimate_noise_rate(probs, true) == 0.0
    per_class = count_errors_per_class(probs, given)
    np.testing.assert_array_equal(per_class, np.bincount(given[flipped], minlength=n_classes))
    assert per_class.sum() == round(estimate_noise_rate(probs, given) * n_samples)


def test_rank_and_per_class_rates():
    np.testing.assert_array_equal(rank_by_score([0.3, 0.1, 0.3, 0.0]), [3, 2, 4, 1])
    rates = compute_noise_rate_per_class(np.array([True, False, False, True]),
                                         np.array([0, 0, 1, 1]), n_classes=3)
    np.testing.assert_allclose(rates[:2], [0.5, 0.5])
    assert np.isnan(rates[2])


def test_issues_table_partners_and_suggestions():
    labels = np.array([0, 1, 1])
    pred = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    pairs = pd.DataFrame({"i": [0], "j": [1], "similarity": [0.99]})
    table = build_issues_table(labels=labels, label_scores=np.array([0.9, 0.8, 0.2]),
                               is_label_issue=np.array([False, False, True]), head_probs=pred,
                               pred_probs=pred, knn_agreement=np.array([1.0, 0.5, 0.0]),
                               scores={"sei": np.zeros(3), "entropy_integral": np.ones(3)},
                               duplicate_pairs=pairs)
    assert table["suggested_label"].tolist() == [0, 1, 0]
    assert table["suggested_confidence"].iloc[2] == pytest.approx(0.7)
    assert table["conflicting_duplicate"].tolist() == [1, 0, -1]
    assert table["rank"].tolist() == [3, 2, 1]
    assert {"sei_score", "entropy_integral"} <= set(table.columns)


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


def test_expected_f1_count():
    errors = np.array([0.0, 0.95, 0.0, 0.9, 0.05, 0.85])
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])  # the likely errors score lowest
    assert compute_expected_f1_count(errors, scores) == 3
    assert compute_expected_f1_count(np.zeros(4), np.arange(4)) == 0
    # a long tail of half-likely errors is worth flagging too
    assert compute_expected_f1_count(np.r_[np.ones(5), np.full(5, 0.6), np.zeros(90)],
                                     np.arange(100)) == 10
    # nearly flat error probabilities: no more than the samples likelier wrong than average
    flat = 0.3 + 0.01 * np.random.default_rng(0).standard_normal(200)
    uncapped_f1 = 2 * np.cumsum(flat) / (np.arange(1, 201) + flat.sum())
    assert np.argmax(uncapped_f1) == 199  # F1 alone would flag every sample
    assert compute_expected_f1_count(flat, np.arange(200)) == (flat > flat.mean()).sum()


def test_aligned_error_probabilities_follow_the_score_within_each_class():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    error_probs = np.array([0.6, 0.2, 0.4, 0.1, 0.3, 0.05, 0.15])
    # class 0 sums to 1.2 and may keep it (count 2); class 1 sums to 0.6, scaled to 0.3
    aligned = align_error_probabilities(error_probs, label_scores, labels, np.array([2, 0.3]))
    np.testing.assert_allclose(aligned[:3], [0.2, 0.6, 0.4])  # lowest score, largest prob
    np.testing.assert_allclose(aligned[3:], np.array([0.3, 0.05, 0.15, 0.1]) / 2)
    # a minority class whose labels are often wrong keeps its higher level: its lowest
    # score outranks a lower score of the other class
    assert aligned[2] > aligned[3] and label_scores[2] > label_scores[3]
    # no class without error probability is touched, and no count scales a class up
    same = align_error_probabilities(np.zeros(7), label_scores, labels, np.array([5, 5]))
    np.testing.assert_array_equal(same, np.zeros(7))


def test_class_cutoffs_separate_each_class_flags():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    flagged = np.array([False, True, True, True, False, False, False])
    cutoffs = compute_class_cutoffs(label_scores, labels, flagged, n_classes=3)
    np.testing.assert_allclose(cutoffs[:2], [0.7, 0.3])
    assert np.isnan(cutoffs[2])  # no sample is labelled 2
    np.testing.assert_array_equal(label_scores < cutoffs[labels], flagged)
