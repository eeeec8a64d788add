"""Verified labels calibrate the flag count (clipsei.engine.verified) and pass through fit/scan."""

from __future__ import annotations

import numpy as np
import pytest

from clipsei import LabelIssueDetector
from clipsei.engine.flag_choice import select_trusted, split_trusted
from clipsei.engine.verified import MIN_VERIFIED_CLEAN, estimate_from_verified
from clipsei.evaluation.synthetic import make_noisy_blobs


def _ranked_sample(rng, n_samples=4000, n_errors=80):
    """Flag keys of a ranking that separates errors well but not perfectly (errors higher)."""
    is_error = np.zeros(n_samples, dtype=bool)
    is_error[rng.choice(n_samples, n_errors, replace=False)] = True
    keys = np.where(is_error, rng.normal(2.5, 1.0, n_samples), rng.normal(0.0, 1.0, n_samples))
    return keys, is_error


def _precision_error(n_verified: int, draw: int) -> float:
    """|estimated - true| precision of the chosen count, one draw of ``n_verified`` rows."""
    rng = np.random.default_rng(draw)
    keys, is_error = _ranked_sample(rng)
    trusted = np.zeros(keys.size, dtype=bool)
    trusted[rng.choice(keys.size, n_verified, replace=False)] = True
    estimate = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng)
    order = np.lexsort((-keys, trusted))[:estimate.n_flagged]
    return abs(estimate.precision - is_error[order].mean())


def test_more_verified_rows_estimate_precision_closer_to_the_truth():
    few = np.mean([_precision_error(20, draw) for draw in range(30)])
    many = np.mean([_precision_error(800, draw) for draw in range(30)])
    assert many < few
    assert many < 0.25


def test_precision_interval_holds_the_truth_about_as_often_as_it_says():
    inside = []
    for draw in range(40):
        rng = np.random.default_rng(100 + draw)
        keys, is_error = _ranked_sample(rng, n_samples=4000, n_errors=40)
        trusted = np.zeros(keys.size, dtype=bool)
        trusted[rng.choice(keys.size, 100, replace=False)] = True
        estimate = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng)
        flagged = np.lexsort((-keys, trusted))[:estimate.n_flagged]
        low, high = estimate.precision_interval
        inside.append(low <= is_error[flagged].mean() <= high)
    assert 0.7 <= np.mean(inside) <= 0.97  # an 80% interval (a bootstrap held ~45%)


def test_interval_and_error_count_track_the_truth():
    rng = np.random.default_rng(3)
    keys, is_error = _ranked_sample(rng)
    trusted = np.zeros(keys.size, dtype=bool)
    trusted[rng.choice(keys.size, 1000, replace=False)] = True
    estimate = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng)
    true_errors = int((is_error & ~trusted).sum())
    low, high = estimate.n_errors_interval
    assert low <= estimate.n_errors <= high and abs(estimate.n_errors - true_errors) < 25
    assert estimate.precision_interval[0] <= estimate.precision <= estimate.precision_interval[1]
    assert estimate.n_known_errors == int((is_error & trusted).sum())
    assert estimate.n_verified_clean == int((~is_error & trusted).sum())
    strict = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng,
                                    target_precision=0.5, max_flags=1000)
    assert strict.n_flagged > 0 and strict.precision >= 0.5
    assert estimate_from_verified(keys, trusted, trusted & is_error, rng=rng,
                                  target_precision=0.999).n_flagged == 0
    capped = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng, max_flags=5)
    assert capped.n_flagged == 5


def test_too_few_verified_rows_leave_the_count_to_the_rule():
    rng = np.random.default_rng(0)
    keys, is_error = _ranked_sample(rng, n_samples=500, n_errors=10)
    trusted = np.zeros(keys.size, dtype=bool)
    trusted[np.flatnonzero(~is_error)[:MIN_VERIFIED_CLEAN - 1]] = True
    assert estimate_from_verified(keys, trusted, trusted & is_error, rng=rng) is None


def test_split_and_select_trusted():
    given = np.array([0, 1, 2, 1])
    mask, known = split_trusted({1: 1, 3: 0}, given)
    np.testing.assert_array_equal(mask, [False, True, False, True])
    np.testing.assert_array_equal(known, [False, False, False, True])
    mask, known = split_trusted(np.array([0, 2]), given)
    assert mask.sum() == 2 and not known.any()
    assert select_trusted({1: 1, 3: 0}, 4, rows=np.array([0, 3])) == {1: 0}
    np.testing.assert_array_equal(select_trusted([0, 3], 4, rows=[0, 3]), [True, True])
    with pytest.raises(ValueError, match="trusted indices must be in"):
        select_trusted({7: 0}, 4)


@pytest.fixture(scope="module")
def noisy():
    return make_noisy_blobs(200, n_classes=4, noise_rate=0.05, cluster_std=0.45,
                            random_state=2)


def test_verified_rows_choose_the_count_and_count_known_errors(noisy):
    flipped = np.flatnonzero(noisy.is_flipped)[:2]
    clean = np.flatnonzero(~noisy.is_flipped)[:20]
    trusted = {**{int(r): int(noisy.labels[r]) for r in clean},
               **{int(r): int(noisy.true_labels[r]) for r in flipped}}
    issues = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels,
                                                 trusted=trusted).issues_
    verified = issues.attrs["verified"]
    flagged = issues["is_label_issue"].to_numpy()
    assert verified["n_known_errors"] == 2 and verified["n_verified_clean"] == 20
    assert verified["n_flagged"] == flagged.sum()
    assert not flagged[list(trusted)].any()  # verified rows are never flagged
    low, high = verified["precision_interval"]
    assert 0 <= low <= high <= 1
    # as given, the same two rows are verified clean and are no known errors
    as_given = {**trusted, **{int(r): int(noisy.labels[r]) for r in flipped}}
    again = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels,
                                               trusted=as_given).issues_
    assert again.attrs["verified"]["n_known_errors"] == 0
    plain = LabelIssueDetector(n_epochs=5).fit(noisy.embeddings, noisy.labels,
                                               trusted=list(clean[:5])).issues_
    assert plain.attrs["verified"] is None


def test_scan_embeddings_reports_the_verified_estimate(noisy, tmp_path):
    from clipsei import scan_embeddings

    trusted = {int(r): int(noisy.labels[r]) for r in np.flatnonzero(~noisy.is_flipped)[:16]}
    result = scan_embeddings(noisy.embeddings, noisy.labels, out=tmp_path / "out", n_epochs=5,
                             trusted=trusted)
    summary = result.summary
    verified = summary["verified"]
    assert verified["n_verified_clean"] == 16
    # one statement: the verified estimate is the one used, and its error count holds at
    # least the real errors it expects among the flags (it said 0 errors for 9 flags at 100%)
    assert summary["estimate_used"] == "verified" and "verified images" in summary[
        "estimate_note"]
    assert verified["errors_flagged"] == pytest.approx(verified["precision"]
                                                       * verified["n_flagged"])
    assert verified["n_errors"] >= verified["errors_flagged"] - 1e-9
    low, high = verified["n_errors_interval"]
    assert low <= verified["n_errors"] <= high
    assert verified["n_unverified"] == len(noisy.labels) - 16
    page = (tmp_path / "out" / "report.html").read_text()
    assert "precision of the flags (from 16 verified images" in page
    assert "label-free estimate, not used: expected real errors among the flags" in page


def test_no_verified_estimate_where_nothing_can_be_flagged():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 16)).astype(np.float32)  # no class information
    labels = rng.integers(0, 4, 200)
    issues = LabelIssueDetector(n_epochs=5).fit(embeddings, labels,
                                                 trusted=np.arange(40)).issues_
    assert not issues["is_label_issue"].any()
    assert issues.attrs["verified"] is None  # it described flags that were dropped


def test_a_rule_flags_stand_unless_verified_rows_show_most_are_wrong():
    rng = np.random.default_rng(5)
    keys, is_error = _ranked_sample(rng, n_samples=4000, n_errors=400)
    trusted = np.zeros(keys.size, dtype=bool)
    trusted[rng.choice(keys.size, 200, replace=False)] = True
    ranks = np.argsort(np.argsort(-keys))

    def estimate(n_rule):
        return estimate_from_verified(keys, trusted, trusted & is_error, rng=rng,
                                      rule_flags=ranks < n_rule)

    good = estimate(400)  # about as many as there are errors: mostly right
    assert not good.chose_count and good.n_flagged == int(((ranks < 400) & ~trusted).sum())
    assert good.precision_interval[1] >= 0.5
    floored = estimate(2000)  # five times too many: the verified rows choose the count
    assert floored.chose_count and floored.n_flagged < 2000
    assert 0 <= floored.precision <= 1
