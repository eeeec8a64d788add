import numpy as np
import pytest

from clipsei.engine.flagging import (align_error_probabilities, compute_class_cutoffs,
                                     compute_cutoff, compute_cutoff_for_count,
                                     compute_expected_f1_count, compute_flagged_share_per_class,
                                     flag_issues, FlagChoice, compute_expected_errors,
                                     decision_attrs)
from clipsei.engine.ranks import rank_by_score


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


def test_rank_and_flagged_share_per_class():
    np.testing.assert_array_equal(rank_by_score([0.3, 0.1, 0.3, 0.0]), [3, 2, 4, 1])
    rates = compute_flagged_share_per_class(np.array([True, False, False, True]),
                                         np.array([0, 0, 1, 1]), n_classes=3)
    np.testing.assert_allclose(rates[:2], [0.5, 0.5])
    assert np.isnan(rates[2])


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
    # well under one expected error: flagging nothing is likelier right than any flag
    # (a refit on an audit that found one error at the top made every q tiny)
    tiny = np.r_[0.02, np.full(300, 1e-4)]
    assert compute_expected_f1_count(tiny, np.arange(301)) == 0
    assert compute_expected_f1_count(np.r_[0.9, tiny], np.arange(302)) == 1


def test_aligned_error_probabilities_follow_the_score_within_each_class():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    error_probs = np.array([0.6, 0.2, 0.4, 0.1, 0.3, 0.05, 0.15])
    aligned = align_error_probabilities(error_probs, label_scores, labels)
    np.testing.assert_allclose(aligned[:3], [0.2, 0.6, 0.4])  # lowest score, largest prob
    np.testing.assert_allclose(aligned[3:], [0.3, 0.05, 0.15, 0.1])
    # each class keeps its expected number of errors
    assert aligned[:3].sum() == pytest.approx(1.2) and aligned[3:].sum() == pytest.approx(0.6)
    # a minority class whose labels are often wrong keeps its higher level: its lowest
    # score outranks a lower score of the other class
    assert aligned[2] > aligned[3] and label_scores[2] > label_scores[3]


def test_class_cutoffs_separate_each_class_flags():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    flagged = np.array([False, True, True, True, False, False, False])
    cutoffs = compute_class_cutoffs(label_scores, labels, flagged, n_classes=3)
    np.testing.assert_allclose(cutoffs[:2], [0.7, 0.3])
    assert np.isnan(cutoffs[2])  # no sample is labelled 2
    np.testing.assert_array_equal(label_scores < cutoffs[labels], flagged)


def test_count_rule_with_error_probabilities_flags_each_class_lowest_scores():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    flags = _flags_of(None)
    np.testing.assert_array_equal(np.flatnonzero(flags.is_label_issue), [1, 3])
    assert np.isnan(flags.cutoff)
    np.testing.assert_array_equal(label_scores < flags.class_cutoffs[labels], flags.is_label_issue)
    none = flags.without_flags(label_scores, labels)
    assert not none.is_label_issue.any() and not (label_scores < none.class_cutoffs[labels]).any()


def _flags_of(choice, error_probs=None, rule="calibrated"):
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    label_scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.4, 0.6])
    if error_probs is None:
        error_probs = np.array([0.0, 0.9, 0.2, 0.95, 0.0, 0.1, 0.0])
    return flag_issues(label_scores, labels, n_classes=2, rule=rule, percentile=99.0,
                       threshold_reference=label_scores, threshold_scores=np.array([0.3]),
                       class_error_counts=np.array([3, 3]), error_probs=error_probs,
                       choice=choice)


def test_calibrated_rule_has_no_floor_from_confident_learning():
    # confident learning counts 6 errors; the calibrated probabilities expect about 2
    flags = _flags_of(None)
    assert flags.counts.confident_learning == 6 and flags.is_label_issue.sum() == 2
    # calibrated probabilities of a clean set: nothing flagged, whatever the counts say
    assert not _flags_of(None, error_probs=np.zeros(7)).is_label_issue.any()


def test_count_rule_flags_at_least_confident_learnings_count():
    # the default rule: the larger of confident learning's count (3 + 3) and the expected-F1
    # count, each class's probabilities capped at its confident-learning count
    flags = _flags_of(None, rule="count")
    assert flags.counts.confident_learning == 6 and flags.is_label_issue.sum() == 6
    np.testing.assert_array_equal(flags.is_label_issue[[0]], [False])  # class 0's highest score
    budget = _flags_of(FlagChoice(max_flags=2), rule="count")
    np.testing.assert_array_equal(np.flatnonzero(budget.is_label_issue), [1, 3])


def test_target_precision_and_max_flags():
    # aligned order: rows 3 (0.95), 1 (0.9), 5 (0.2: class 1's next lowest score), ...
    precise = _flags_of(FlagChoice(target_precision=0.9))
    np.testing.assert_array_equal(np.flatnonzero(precise.is_label_issue), [1, 3])
    loose = _flags_of(FlagChoice(target_precision=0.5))
    assert loose.is_label_issue.sum() == 4  # (0.95 + 0.9 + 0.2 + 0.1) / 4 >= 0.5 > next
    budget = _flags_of(FlagChoice(max_flags=1))
    np.testing.assert_array_equal(np.flatnonzero(budget.is_label_issue), [3])
    assert _flags_of(FlagChoice(max_flags=5)).is_label_issue.sum() == 5  # alone: exactly N
    both = _flags_of(FlagChoice(target_precision=0.5, max_flags=3))
    assert both.is_label_issue.sum() == 3
    flagged, unflagged = compute_expected_errors(budget.error_probability, budget.is_label_issue)
    assert flagged == pytest.approx(0.95) and unflagged == pytest.approx(1.2)


def test_trusted_rows_are_never_flagged():
    for trusted in (np.array([1, 3]), np.isin(np.arange(7), [1, 3])):
        flags = _flags_of(FlagChoice(max_flags=3, trusted=trusted))
        assert not flags.is_label_issue[[1, 3]].any() and flags.is_label_issue.sum() == 3
        assert flags.error_probability[[1, 3]].sum() == 0
    with pytest.raises(ValueError, match="trusted indices must be in"):
        _flags_of(FlagChoice(trusted=[7]))
    with pytest.raises(ValueError, match="bool mask or row indices"):
        _flags_of(FlagChoice(trusted=np.ones(3, bool)))


def test_decision_attrs_and_clean_note():
    flags = _flags_of(None)
    attrs = decision_attrs(flags, 0.3)
    assert attrs["expected_errors_flagged"] == pytest.approx(1.85)
    assert attrs["expected_errors_unflagged"] == pytest.approx(0.3) and attrs["notes"] == []
    clean = decision_attrs(_flags_of(None, error_probs=np.zeros(7)), 0.0)
    assert "consistent with zero" in clean["notes"][0] and "nothing is flagged" in clean["notes"][0]
    assert decision_attrs(flags, 0.0, informative=False)["notes"] == []
