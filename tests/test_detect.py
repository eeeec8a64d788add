import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from clipsei import NotFittedError
from clipsei.engine.detect import (METHODS, LabelIssueDetector, SEIDetector,
                                   check_detector_options, find_label_issues)
from clipsei.engine.options import head_options
from clipsei.evaluation.synthetic import make_noisy_blobs

# methods that score embeddings alone ("sei_prompt" needs a text model: test_prompt_head.py)
EMBEDDING_METHODS = sorted(set(METHODS) - {"sei_prompt", "zero_shot"})  # need text: own tests
COLUMNS = ["given_label", "predicted_label", "suggested_label", "suggested_confidence",
           "label_score", "is_label_issue", "rank", "knn_agreement", "sei_score", "aum_score",
           "entropy_integral", "given_prob_score", "forgetting_score", "conflicting_duplicate"]


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
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
    assert len(attrs["flagged_share_per_class"]) == 4
    counts = attrs["error_counts"]
    # at least confident learning's count, more where the expected F1 gains
    assert flagged.sum() == max(counts["confident_learning"], counts["expected_f1"])
    assert attrs["expected_errors_flagged"] == pytest.approx(
        issues["error_probability"].to_numpy()[flagged].sum(), rel=1e-5)
    # the error rate is confident learning's estimate, not the (F1-driven) flagged share
    estimated = counts["confident_learning"] / len(issues)
    assert attrs["estimated_error_rate"] == pytest.approx(estimated)
    assert sum(attrs["estimated_errors_per_class"]) == counts["confident_learning"]
    assert attrs["warnings"] == [] and attrs["class_signal"]["informative"]
    assert attrs["heldout_logit_scale"] in (0.25, 0.5, 1, 2, 4, 8, 16, 32)
    # the flags are the largest error probabilities, which are each class's lowest scores
    n_flagged = flagged.sum()
    assert set(np.argsort(-issues["error_probability"].to_numpy(), kind="stable")[:n_flagged]) \
        == set(np.flatnonzero(flagged))
    class_cutoffs = np.array(attrs["class_cutoffs"])[issues["given_label"]]
    assert len(attrs["class_cutoffs"]) == 4
    np.testing.assert_array_equal(flagged, issues["label_score"].to_numpy() < class_cutoffs)


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_embeddings_without_class_information_flag_nothing(method):
    # labels drawn independently of the embeddings: no flag is a finding
    rng = np.random.default_rng(0)
    embeddings, labels = rng.standard_normal((400, 32)), rng.integers(0, 2, 400)
    with pytest.warns(UserWarning, match="no class information"):
        issues = find_label_issues(embeddings, labels, method=method, n_epochs=3)
    assert not issues["is_label_issue"].any()
    signal = issues.attrs["class_signal"]
    assert not signal["informative"] and signal["n"] == 400
    assert signal["accuracy_lower_bound"] < signal["heldout_accuracy"]
    assert len(issues.attrs["warnings"]) == 1
    assert "nothing was flagged" in issues.attrs["warnings"][0]
    assert issues["label_score"].notna().all()


def test_heavy_noise_is_still_informative():
    # 40% symmetric noise on four classes
    data = make_noisy_blobs(200, n_classes=4, noise_rate=0.4, random_state=2)
    issues = find_label_issues(data.embeddings, data.labels)
    assert issues.attrs["class_signal"]["informative"] and issues.attrs["warnings"] == []
    assert issues["is_label_issue"].sum() >= 0.5 * data.is_flipped.sum()
    assert roc_auc_score(data.is_flipped, -issues["label_score"]) > 0.9


def test_noise_on_imbalanced_classes_is_still_informative():
    # 30% symmetric noise on two classes 85:15: the best accuracy against the given labels
    # is about 0.70, close to always guessing the majority (0.64)
    data = make_noisy_blobs(470, n_classes=2, noise_rate=0.0, random_state=2)
    keep = np.flatnonzero((data.true_labels == 0) | (np.arange(470) % 6 == 0))
    labels, true = data.labels[keep].copy(), data.true_labels[keep]
    flip = np.random.default_rng(0).random(keep.size) < 0.3
    labels[flip] = 1 - labels[flip]
    issues = find_label_issues(data.embeddings[keep], labels)
    signal = issues.attrs["class_signal"]
    assert signal["informative"]
    assert issues["is_label_issue"].any()
    assert roc_auc_score(labels != true, -issues["label_score"]) > 0.9


def test_default_is_deterministic(blobs):
    first, second, third = (find_label_issues(blobs.embeddings, blobs.labels, n_epochs=3)
                            for _ in range(3))
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, third)
    assert LabelIssueDetector().random_state == 0


@pytest.mark.parametrize("method, with_text", [("clipsei", False), ("aum", True)])
def test_classes_without_samples_change_nothing(blobs, method, with_text):
    present = np.array([0, 2, 5, 6])  # classes 1, 3 and 4 have no sample
    text = np.random.default_rng(5).standard_normal((7, 32))
    text[present] = blobs.class_embeddings
    compact = find_label_issues(blobs.embeddings, blobs.labels, method=method, n_epochs=3,
                                class_embeddings=blobs.class_embeddings if with_text else None)
    with pytest.warns(UserWarning, match="no samples"):
        detector = LabelIssueDetector(method=method, n_epochs=3).fit(
            blobs.embeddings, present[blobs.labels], class_embeddings=text if with_text else None)
    sparse = detector.issues_
    for column in compact.columns:
        if column not in ("given_label", "predicted_label", "suggested_label"):
            pd.testing.assert_series_equal(sparse[column], compact[column])
    for column in ("given_label", "predicted_label", "suggested_label"):
        np.testing.assert_array_equal(sparse[column], present[compact[column]])
    assert detector.pred_probs_.shape == (200, 7)
    assert (detector.pred_probs_[:, [1, 3, 4]] == 0).all()
    shares = sparse.attrs["flagged_share_per_class"]
    assert [shares[k] for k in (1, 3, 4)] == [None] * 3
    assert [shares[k] for k in present] == compact.attrs["flagged_share_per_class"]
    assert [sparse.attrs["class_cutoffs"][k] for k in (1, 3, 4)] == [None] * 3
    assert sparse.attrs["estimated_errors_per_class"][1] == 0


def test_tiny_sets_need_no_n_neighbors(recwarn):
    rng = np.random.default_rng(0)
    embeddings, labels = rng.standard_normal((8, 16)), np.array([0, 1] * 4)
    detector = LabelIssueDetector(n_epochs=2).fit(embeddings, labels)
    assert detector.neighbor_ids_.shape == (8, 7)
    assert not [w for w in recwarn if "n_neighbors" in str(w.message)]


@pytest.mark.parametrize("options, match", [
    ({"n_epochs": 0}, r"n_epochs must be an int >= 1; got 0"),
    ({"n_epochs": 2.5}, r"n_epochs must be an int >= 1; got 2.5"),
    ({"n_folds": 1}, r"n_folds must be an int >= 2; got 1"),
    ({"n_neighbors": 0}, r"n_neighbors must be an int >= 1; got 0"),
    ({"n_repeats": 0}, r"n_repeats must be an int >= 1 or None; got 0"),
    ({"batch_size": 0}, r"batch_size must be an int >= 1 or None; got 0"),
    ({"lr": -1.0}, r"lr must be a number in \(0, inf\]; got -1.0"),
    ({"cutoff_percentile": 101}, r"cutoff_percentile must be a number in \[0, 100\]"),
    ({"method": "magic"}, "method must be one of"),
])
def test_options_are_checked_before_any_work(options, match):
    with pytest.raises(ValueError, match=match):
        check_detector_options(**options)
    with pytest.raises(ValueError, match=match):  # before the (bad) arrays are looked at
        LabelIssueDetector(**options).fit(np.ones((5, 3)), np.zeros(4, int))


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="n_epoch"):
        check_detector_options(n_epoch=3)


def test_seidetector_is_a_deprecated_alias(blobs):
    with pytest.warns(DeprecationWarning, match="LabelIssueDetector"):
        detector = SEIDetector(method="aum", n_epochs=2)
    assert isinstance(detector, LabelIssueDetector)
    assert detector.fit(blobs.embeddings, blobs.labels).issues_ is not None


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


def test_threshold_samples_score_like_errors(blobs):
    detector = LabelIssueDetector(method="aum", n_epochs=3).fit(blobs.embeddings, blobs.labels)
    # two disjoint slices of N / (K + 1) threshold samples each
    assert detector.threshold_scores_.size == 2 * round(blobs.labels.size / 5)
    assert np.median(detector.threshold_scores_) < detector.issues_["label_score"].median()


def test_pruned_round_ranks_the_planted_flips_first(blobs):
    detector = LabelIssueDetector(n_repeats=1).fit(blobs.embeddings, blobs.labels)
    margins = detector.issues_["pruned_heldout_margin_score"]
    assert roc_auc_score(blobs.is_flipped, -margins) > 0.95


def test_default_averages_repeats_on_small_sets(blobs):
    """The default averages three repeats on a small set; the reference methods run once."""
    default = LabelIssueDetector().fit(blobs.embeddings, blobs.labels)
    assert default.n_repeats_ == default.issues_.attrs["n_repeats"] == 3
    once = LabelIssueDetector(n_repeats=1).fit(blobs.embeddings, blobs.labels)
    # every repeat's threshold samples are pooled; the histories stay (E, N)
    assert default.threshold_scores_.size == 3 * once.threshold_scores_.size
    assert default.entropy_history_.shape == once.entropy_history_.shape
    aum = LabelIssueDetector(method="aum", n_epochs=3).fit(blobs.embeddings, blobs.labels)
    assert aum.threshold_scores_.size == once.threshold_scores_.size
    twice = LabelIssueDetector(method="aum", n_epochs=3, n_repeats=2).fit(
        blobs.embeddings, blobs.labels)
    assert twice.threshold_scores_.size == 2 * aum.threshold_scores_.size
    assert roc_auc_score(blobs.is_flipped, -twice.issues_["label_score"]) > 0.9
    assert LabelIssueDetector().get_params()["n_repeats"] is None


def test_histories_and_fitted_attributes(blobs):
    detector = LabelIssueDetector(n_epochs=4, n_neighbors=5, random_state=0).fit(
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
        _ = LabelIssueDetector().issues_


def test_class_embeddings_initialise_the_head(blobs):
    detector = LabelIssueDetector(n_epochs=1, random_state=0).fit(
        blobs.embeddings, blobs.labels, class_embeddings=blobs.class_embeddings,
        other_embedding=-blobs.class_embeddings.mean(axis=0))
    # after one epoch from the zero-shot init, the head already agrees with true classes
    predicted = detector.issues_["predicted_label"].to_numpy()
    assert (predicted == blobs.true_labels).mean() > 0.9


def test_groups_exclude_own_group_neighbours(blobs):
    groups = np.arange(200) // 2
    detector = LabelIssueDetector(n_epochs=2, random_state=0).fit(blobs.embeddings, blobs.labels,
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


@pytest.fixture(scope="module")
def planted_conflicts():
    """Blobs shifted along one shared direction, as CLIP embeddings are (every raw cosine is
    high), with six planted near-identical pairs given different labels."""
    blobs = make_noisy_blobs(120, n_classes=4, n_features=32, noise_rate=0.1, random_state=1)
    rng = np.random.default_rng(1)
    x, labels = blobs.embeddings.copy(), blobs.labels.copy()
    copies = np.arange(0, 60, 10)
    x[copies + 1] = x[copies] + 1e-3 * rng.normal(size=(copies.size, 32))
    labels[copies + 1] = (labels[copies] + 1) % 4
    offset = 3 * rng.normal(size=32) / np.sqrt(32)
    planted = {(int(i), int(i) + 1) for i in copies}
    return (x + offset).astype(np.float32), labels, blobs.class_embeddings + offset, planted


@pytest.mark.parametrize("method", ["clipsei", "sei_paper", "aum", "entropy_integral",
                                    "zero_shot"])
def test_conflicting_duplicates_do_not_depend_on_the_method(planted_conflicts, method):
    x, labels, class_embeddings, planted = planted_conflicts
    detector = LabelIssueDetector(method=method, n_epochs=2).fit(
        x, labels, class_embeddings=class_embeddings)
    pairs = set(zip(detector.duplicate_pairs_["i"].tolist(), detector.duplicate_pairs_["j"]))
    assert pairs == planted
    partner = detector.issues_["conflicting_duplicate"].to_numpy()
    for first, second in planted:
        assert (partner[first], partner[second]) == (second, first)
    assert (partner >= 0).sum() == 2 * len(planted)


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
    detector = LabelIssueDetector(method="sei_paper", cutoff=cutoff, cutoff_percentile=percentile,
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
    plain = LabelIssueDetector(n_epochs=3, random_state=0).fit(features, blobs.labels)
    with_text = LabelIssueDetector(n_epochs=3, random_state=0).fit(features, blobs.labels,
                                                            class_embeddings=text)
    # neighbours and held-out heads see the same standardised features either way
    np.testing.assert_array_equal(with_text.neighbor_ids_, plain.neighbor_ids_)
    assert with_text.heldout_logit_scale_ == plain.heldout_logit_scale_
    auroc = roc_auc_score(blobs.is_flipped, -with_text.issues_["label_score"])
    assert auroc > 0.95, auroc


@pytest.mark.parametrize("n_samples, batch_size", [(100, 32), (254, 32), (780, 48), (4000, 250),
                                                   (5030, 256), (100_000, 1000)])
def test_default_batch_gives_small_sets_enough_steps(n_samples, batch_size):
    options = head_options(LabelIssueDetector(lr=0.1).get_params(), n_samples)
    assert options["batch_size"] == batch_size
    assert options["lr"] == pytest.approx(0.1 * batch_size / 256)  # linear scaling


def test_sklearn_clone_and_set_params():
    from sklearn.base import clone

    detector = LabelIssueDetector(n_epochs=3, random_state=4)
    copy = clone(detector)
    assert copy is not detector and copy.get_params() == detector.get_params()
    assert detector.set_params(lr=0.5, n_neighbors=7) is detector
    assert (detector.lr, detector.n_neighbors) == (0.5, 7)
    with pytest.raises(ValueError, match="bogus"):
        detector.set_params(bogus=1)
