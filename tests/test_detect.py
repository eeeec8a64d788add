import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from clipsei import NotFittedError
from clipsei.detect import METHODS, SEIDetector, find_label_issues

COLUMNS = ["given_label", "predicted_label", "suggested_label", "suggested_confidence",
           "label_score", "is_label_issue", "rank", "knn_agreement", "sei_score", "aum_score",
           "entropy_integral", "given_prob_score", "forgetting_score", "conflicting_duplicate"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_planted_flips_rank_at_the_top(blobs, method):
    issues = find_label_issues(blobs.embeddings, blobs.labels, method=method, random_state=0)
    heldout = ["heldout_prob_score", "heldout_margin_score", "pruned_heldout_margin_score",
               "bayes_label_prob_score"]
    expected = COLUMNS[:-1] + (heldout if method == "clipsei" else []) + COLUMNS[-1:]
    if method == "clipsei":
        expected.insert(expected.index("is_label_issue") + 1, "error_probability")
    assert list(issues.columns) == expected
    assert len(issues) == blobs.labels.size
    assert issues["label_score"].between(0, 1).all()
    np.testing.assert_array_equal(issues["given_label"], blobs.labels)
    if method == "entropy_integral":  # uncertainty alone cannot tell confident errors apart
        return
    auroc = roc_auc_score(blobs.is_flipped, -issues["label_score"])
    assert auroc > 0.95, auroc
    top = issues.nsmallest(blobs.is_flipped.sum(), "rank").index
    assert blobs.is_flipped[top].mean() >= 0.7


def test_default_flags_and_suggestions(blobs):
    issues = find_label_issues(blobs.embeddings, blobs.labels, random_state=0)
    flagged = issues["is_label_issue"].to_numpy()
    assert blobs.is_flipped[flagged].mean() >= 0.9  # precision
    assert flagged[blobs.is_flipped].mean() >= 0.7  # recall
    # suggestions recover the true class of most flagged flips
    hits = issues["suggested_label"].to_numpy()[flagged & blobs.is_flipped]
    assert (hits == blobs.true_labels[flagged & blobs.is_flipped]).mean() >= 0.9
    assert np.array_equal(np.sort(issues["rank"]), np.arange(1, len(issues) + 1))
    assert issues.loc[issues["rank"] == 1, "label_score"].iloc[0] == issues["label_score"].min()
    attrs = issues.attrs
    assert attrs["method"] == "clipsei" and attrs["cutoff"] is None  # one cutoff per class
    assert len(attrs["noise_rate_per_class"]) == 4
    counts = attrs["error_counts"]
    assert flagged.sum() == max(counts["confident_learning"], counts["expected_f1"])
    # the error rate is confident learning's estimate, not the (F1-driven) flagged share
    estimated = counts["confident_learning"] / len(issues)
    assert attrs["estimated_noise_rate"] == pytest.approx(estimated)
    assert attrs["heldout_logit_scale"] in (0.25, 0.5, 1, 2, 4, 8, 16, 32)
    # the flags are the largest error probabilities, which are each class's lowest scores
    n_flagged = flagged.sum()
    assert set(np.argsort(-issues["error_probability"].to_numpy(), kind="stable")[:n_flagged]) \
        == set(np.flatnonzero(flagged))
    class_cutoffs = np.array(attrs["class_cutoffs"])[issues["given_label"]]
    assert len(attrs["class_cutoffs"]) == 4
    np.testing.assert_array_equal(flagged, issues["label_score"].to_numpy() < class_cutoffs)


def test_uninformative_embeddings_are_not_all_flagged():
    # labels drawn independently of the embeddings: every label is equally doubtful, and
    # the expected-F1 count alone would flag all 400
    rng = np.random.default_rng(0)
    embeddings, labels = rng.standard_normal((400, 32)), rng.integers(0, 2, 400)
    issues = find_label_issues(embeddings, labels, random_state=0)
    counts = issues.attrs["error_counts"]
    n_flagged = issues["is_label_issue"].sum()
    assert n_flagged == max(counts["confident_learning"], counts["expected_f1"])
    assert n_flagged < 0.7 * len(issues)


def test_same_seed_same_scores_and_other_seed_differs(blobs):
    first = find_label_issues(blobs.embeddings, blobs.labels, random_state=3)
    again = find_label_issues(blobs.embeddings, blobs.labels, random_state=3)
    other = find_label_issues(blobs.embeddings, blobs.labels, random_state=4)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["aum_score"], other["aum_score"])


def test_inputs_are_not_modified(blobs):
    embeddings, labels = blobs.embeddings.copy(), blobs.labels.copy()
    find_label_issues(embeddings, labels, random_state=0, n_epochs=2)
    np.testing.assert_array_equal(embeddings, blobs.embeddings)
    np.testing.assert_array_equal(labels, blobs.labels)


def test_each_sample_scored_from_runs_where_it_was_real(blobs, monkeypatch):
    """Record the labels each head saw; a threshold sample's score must not come from its run."""
    import clipsei.detect as detect

    seen = []
    real_train = detect.train_head

    def recording_train(x, labels, **kwargs):
        seen.append(labels.copy())
        return real_train(x, labels, **kwargs)

    monkeypatch.setattr(detect, "train_head", recording_train)
    detector = SEIDetector(method="aum", n_epochs=3, random_state=0)
    detector.fit(blobs.embeddings, blobs.labels)
    extra = 4
    in_first = seen[0] == extra
    in_second = seen[1] == extra
    assert in_first.sum() == in_second.sum() == round(blobs.labels.size / 5)
    assert not (in_first & in_second).any()
    # the threshold samples' scores are their scores against the extra class: very low
    assert detector.threshold_scores_.size == in_first.sum() + in_second.sum()
    assert np.median(detector.threshold_scores_) < detector.issues_["label_score"].median()


def test_pruned_round_never_trains_on_the_first_rounds_suspects(blobs, monkeypatch):
    """The second held-out round trains without the first round's suspects (at least the
    confident-learning count of lowest scores), and its margins still rank the planted
    flips first."""
    import clipsei.detect as detect

    masks = []
    real_crossfit = detect.train_crossfit_head

    def recording_crossfit(x, labels, **kwargs):
        masks.append(kwargs.get("train_mask"))
        return real_crossfit(x, labels, **kwargs)

    monkeypatch.setattr(detect, "train_crossfit_head", recording_crossfit)
    detector = SEIDetector(n_repeats=1, random_state=0).fit(blobs.embeddings, blobs.labels)
    first, pruned = masks
    assert first is None
    left_out = ~pruned
    assert 0 < left_out.sum() < blobs.labels.size / 2
    assert blobs.is_flipped[left_out].mean() >= 0.8  # the suspects are mostly the flips
    margins = detector.issues_["pruned_heldout_margin_score"]
    assert roc_auc_score(blobs.is_flipped, -margins) > 0.95


def test_default_averages_repeats_on_small_sets(blobs, monkeypatch):
    """On a small set the default averages three repeats of its stochastic stages (two
    held-out rounds each); the reference methods run once, as published; n_repeats sets it."""
    import clipsei.detect as detect

    calls = []
    real_crossfit = detect.train_crossfit_head

    def counting_crossfit(x, labels, **kwargs):
        calls.append(kwargs.get("train_mask") is None)
        return real_crossfit(x, labels, **kwargs)

    monkeypatch.setattr(detect, "train_crossfit_head", counting_crossfit)
    default = SEIDetector(random_state=0).fit(blobs.embeddings, blobs.labels)
    assert calls == [True, False] * 3  # first round, then pruned round, three times
    assert default.n_repeats_ == default.issues_.attrs["n_repeats"] == 3
    once = SEIDetector(n_repeats=1, random_state=0).fit(blobs.embeddings, blobs.labels)
    # every repeat's threshold samples are pooled; the histories stay (E, N)
    assert default.threshold_scores_.size == 3 * once.threshold_scores_.size
    assert default.entropy_history_.shape == once.entropy_history_.shape
    aum = SEIDetector(method="aum", n_epochs=3, random_state=0).fit(blobs.embeddings,
                                                                   blobs.labels)
    assert aum.threshold_scores_.size == once.threshold_scores_.size
    twice = SEIDetector(method="aum", n_epochs=3, n_repeats=2, random_state=0).fit(
        blobs.embeddings, blobs.labels)
    assert twice.threshold_scores_.size == 2 * aum.threshold_scores_.size
    assert roc_auc_score(blobs.is_flipped, -twice.issues_["label_score"]) > 0.9
    assert SEIDetector().get_params()["n_repeats"] is None
    with pytest.raises(ValueError, match="n_repeats"):
        SEIDetector(n_repeats=0).fit(blobs.embeddings, blobs.labels)


def test_suspects_take_each_class_its_own_count():
    """A minority class whose clean samples all score low must not use up the global quota:
    each class still loses at least its own count of lowest scores."""
    from clipsei.detect import _select_suspects

    labels = np.array([0] * 4 + [1] * 8)
    scores = np.array([0.1, 0.2, 0.3, 0.4] + [0.9, 0.5, 0.95, 0.6, 0.99, 0.97, 0.98, 0.96])
    suspects = _select_suspects(scores, labels, 3, np.array([1, 2]))
    # globally the three lowest are all class 0; class 1 adds its two lowest (0.5, 0.6)
    np.testing.assert_array_equal(np.flatnonzero(suspects), [0, 1, 2, 5, 7])
    np.testing.assert_array_equal(np.flatnonzero(_select_suspects(scores, labels, 0, [0, 0])), [])


def test_histories_and_fitted_attributes(blobs):
    detector = SEIDetector(n_epochs=4, n_neighbors=5, random_state=0).fit(
        blobs.embeddings, blobs.labels)
    assert detector.entropy_history_.shape == (4, 200)
    assert detector.entropy_history_.dtype == np.float16
    assert detector.agreement_history_.dtype == bool
    assert detector.neighbor_ids_.shape == (200, 5)
    assert detector.pred_probs_.shape == (200, 4)
    np.testing.assert_allclose(detector.pred_probs_.sum(axis=1), 1, rtol=1e-5)
    assert np.isfinite(detector.entropy_history_.astype(np.float32)).all()


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        _ = SEIDetector().issues_


def test_class_embeddings_initialise_the_head(blobs):
    detector = SEIDetector(n_epochs=1, random_state=0).fit(
        blobs.embeddings, blobs.labels, class_embeddings=blobs.class_embeddings,
        other_embedding=-blobs.class_embeddings.mean(axis=0))
    # after one epoch from the zero-shot init, the head already agrees with true classes
    predicted = detector.issues_["predicted_label"].to_numpy()
    assert (predicted == blobs.true_labels).mean() > 0.9


def test_groups_exclude_own_group_neighbours(blobs):
    groups = np.arange(200) // 2
    detector = SEIDetector(n_epochs=2, random_state=0).fit(blobs.embeddings, blobs.labels,
                                                           groups=groups)
    ids = detector.neighbor_ids_
    assert (groups[ids] != groups[:, None]).all()


def test_conflicting_duplicate_reported(blobs):
    embeddings = np.vstack([blobs.embeddings, blobs.embeddings[:1]])
    labels = np.append(blobs.labels, (blobs.labels[0] + 1) % 4)
    with pytest.warns(UserWarning, match="exact duplicate"):
        issues = find_label_issues(embeddings, labels, n_epochs=2, random_state=0)
    assert issues.loc[200, "conflicting_duplicate"] == 0
    assert issues.loc[0, "conflicting_duplicate"] == 200


@pytest.mark.parametrize("embeddings, labels, options, error, match", [
    (np.ones((5, 3)), np.zeros(4, int), {}, ValueError, "one entry per sample"),
    (np.ones((5, 3)), np.array([0, 1, 2, 0, -1]), {}, ValueError, "negative"),
    (np.ones((5, 3)), np.array([0, 1, 0, 1.5, 0]), {}, TypeError, "integers"),
    (np.ones((5, 3)), np.array(["a"] * 5), {}, TypeError, "integers"),
    (np.ones((5,)), np.zeros(5, int), {}, ValueError, r"2-D array \(N, D\)"),
    (np.array([[1.0, np.nan]] * 5), np.array([0, 1, 0, 1, 0]), {}, ValueError, "NaN or inf"),
    (np.vstack([np.zeros((1, 3)), np.ones((4, 3))]), np.array([0, 1, 0, 1, 0]), {}, ValueError,
     "non-zero rows"),
    (np.ones((5, 3)), np.zeros(5, int), {}, ValueError, "at least 2 classes"),
    (np.eye(6), np.array([0, 1, 0, 1, 0, 1]), {"n_neighbors": 6}, ValueError, "n_neighbors"),
    (np.eye(6), np.array([0, 1] * 3), {"method": "magic"}, ValueError, "method must be one of"),
    (np.eye(6), np.array([0, 1] * 3), {"n_threshold_runs": 1}, ValueError, "n_threshold_runs"),
    (np.eye(6), np.array([0, 1, 0, 1, 0, 1]), {"threshold_fraction": 0.6}, ValueError,
     "threshold_fraction"),
    (np.eye(6), np.array([0, 1, 0, 1, 0, 1]), {"random_state": "x"}, TypeError, "random_state"),
    (np.eye(6), np.array([0, 1, 0, 1, 0, 1]), {"n_folds": 1}, ValueError, "n_folds"),
])
def test_bad_input(embeddings, labels, options, error, match):
    with pytest.raises(error, match=match):
        find_label_issues(embeddings, labels, n_epochs=1, **options)


def test_bad_class_embeddings(blobs):
    with pytest.raises(ValueError, match="class_embeddings must be"):
        find_label_issues(blobs.embeddings, blobs.labels, class_embeddings=np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"labels must be ints in \[0, 3\)"):
        find_label_issues(blobs.embeddings, blobs.labels,
                          class_embeddings=blobs.class_embeddings[:3])
    with pytest.raises(ValueError, match="other_embedding needs class_embeddings"):
        find_label_issues(blobs.embeddings, blobs.labels, other_embedding=np.ones(32))


def test_recoverable_oddities_warn(blobs):
    labels = blobs.labels.copy()
    labels[labels == 3] = 0
    labels[0] = 3  # class 3 now has a single sample
    with pytest.warns(UserWarning, match="fewer than 3 samples"):
        find_label_issues(blobs.embeddings, labels, n_epochs=1, random_state=0)
    class_embeddings = np.vstack([blobs.class_embeddings, np.ones((1, 32))])
    with pytest.warns(UserWarning, match=r"classes \[4\] have no samples"):
        find_label_issues(blobs.embeddings, blobs.labels, class_embeddings=class_embeddings,
                          n_epochs=1, random_state=0)


@pytest.mark.parametrize("cutoff, percentile", [("mean", None), ("percentile", 99.0),
                                                 ("percentile", 50.0), ("count", None)])
def test_cutoff_rules_can_be_chosen(blobs, cutoff, percentile):
    detector = SEIDetector(method="sei_paper", cutoff=cutoff, cutoff_percentile=percentile,
                           n_epochs=3, random_state=0).fit(blobs.embeddings, blobs.labels)
    flagged = detector.issues_["is_label_issue"].to_numpy()
    threshold = detector.threshold_scores_
    if cutoff == "mean":
        assert detector.cutoff_ == pytest.approx(threshold.mean())
    elif cutoff == "percentile":
        assert detector.cutoff_ == pytest.approx(np.percentile(threshold, percentile))
    else:
        assert flagged.sum() == detector.issues_.attrs["error_counts"]["confident_learning"]
    if cutoff != "count":
        np.testing.assert_array_equal(flagged, detector.issues_["label_score"] < detector.cutoff_)
    # one cutoff for every class: the reference methods rank all classes on one scale
    np.testing.assert_array_equal(detector.class_cutoffs_, np.full(4, detector.cutoff_))


def test_bad_cutoff(blobs):
    with pytest.raises(ValueError, match="cutoff must be one of"):
        find_label_issues(blobs.embeddings, blobs.labels, cutoff="median")


def test_text_features_start_only_the_in_sample_heads(blobs):
    # features with a shared offset and uneven spread, as pooled CNN or CLIP features have
    rng = np.random.default_rng(1)
    features = blobs.embeddings * rng.uniform(0.2, 3.0, blobs.embeddings.shape[1]) + 4.0
    text = rng.standard_normal((4, features.shape[1]))  # a text side unrelated to the images
    plain = SEIDetector(n_epochs=3, random_state=0).fit(features, blobs.labels)
    with_text = SEIDetector(n_epochs=3, random_state=0).fit(features, blobs.labels,
                                                            class_embeddings=text)
    # neighbours and held-out heads see the same standardised features either way
    np.testing.assert_array_equal(with_text.neighbor_ids_, plain.neighbor_ids_)
    assert with_text.heldout_logit_scale_ == plain.heldout_logit_scale_
    auroc = roc_auc_score(blobs.is_flipped, -with_text.issues_["label_score"])
    assert auroc > 0.95, auroc


@pytest.mark.parametrize("n_samples, batch_size", [(100, 32), (254, 32), (780, 48), (4000, 250),
                                                   (5030, 256), (100_000, 1000)])
def test_default_batch_gives_small_sets_enough_steps(n_samples, batch_size):
    options = SEIDetector(lr=0.1)._head_options(n_samples)
    assert options["batch_size"] == batch_size
    assert options["lr"] == pytest.approx(0.1 * batch_size / 256)  # linear scaling
