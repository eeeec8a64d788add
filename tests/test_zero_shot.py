import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clipsei.engine.detect import LabelIssueDetector, find_label_issues
from clipsei.engine.zero_shot import compute_zero_shot, fit_temperature, log_softmax
from clipsei.evaluation.bench import run_bench
from clipsei.evaluation.synthetic import make_noisy_blobs

ZERO_SHOT_COLUMNS = ["zero_shot_prob_score", "zero_shot_margin_score",
                     "zero_shot_signed_entropy_score"]


def _prototypes(blobs):
    """Class means of the clean labels: a text side aligned with the image space."""
    return np.stack([blobs.embeddings[blobs.true_labels == k].mean(axis=0)
                     for k in range(blobs.class_embeddings.shape[0])])


def test_zero_shot_ranks_planted_flips_on_top(blobs):
    issues = find_label_issues(blobs.embeddings, blobs.labels, method="zero_shot",
                               class_embeddings=_prototypes(blobs))
    assert set(ZERO_SHOT_COLUMNS) <= set(issues.columns)
    assert issues["label_score"].between(0, 1).all()
    assert np.isfinite(issues[ZERO_SHOT_COLUMNS].to_numpy()).all()
    assert roc_auc_score(blobs.is_flipped, -issues["label_score"]) > 0.95
    top = issues.nsmallest(int(blobs.is_flipped.sum()), "rank").index
    assert blobs.is_flipped[top].mean() >= 0.8
    flagged = issues["is_label_issue"].to_numpy()
    assert flagged.any() and blobs.is_flipped[flagged].mean() >= 0.8
    assert issues["error_probability"].between(0, 1).all()
    # the signed entropy is negative exactly where the zero-shot class is another
    disagrees = issues["predicted_label"] != issues["given_label"]
    np.testing.assert_array_equal(issues["zero_shot_signed_entropy_score"] < 0, disagrees)
    assert issues.attrs["method"] == "zero_shot" and issues.attrs["zero_shot_temperature"] > 0
    assert "threshold" not in issues.attrs["error_counts"]


def test_zero_shot_histories_are_one_epoch(blobs):
    detector = LabelIssueDetector(method="zero_shot").fit(
        blobs.embeddings, blobs.labels, class_embeddings=_prototypes(blobs))
    n = blobs.labels.size
    assert detector.entropy_history_.shape == (1, n)
    assert detector.agreement_history_.dtype == bool
    assert detector.pred_probs_.shape == (n, 4)
    np.testing.assert_allclose(detector.pred_probs_.sum(axis=1), 1, atol=1e-5)


def test_zero_shot_works_on_a_tiny_set():
    blobs = make_noisy_blobs(6, n_classes=2, n_features=8, noise_rate=0.0, random_state=1)
    # no training, so six rows score without a numerical error (whether six rows show a
    # class signal is the check's business: tests/test_class_signal.py)
    with np.errstate(divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        issues = find_label_issues(blobs.embeddings, blobs.labels, method="zero_shot",
                                   class_embeddings=blobs.class_embeddings)
    assert len(issues) == 6 and np.isfinite(issues["label_score"]).all()
    assert issues.attrs["class_signal"]["n"] == 6


def test_fitted_temperature_maximises_the_likelihood(blobs):
    cosines = blobs.embeddings @ _prototypes(blobs).T
    best = fit_temperature(cosines, blobs.labels)
    rows = np.arange(blobs.labels.size)

    def likelihood(t):
        return log_softmax(t * cosines)[rows, blobs.labels].mean()

    assert likelihood(best) >= max(likelihood(best * 0.7), likelihood(best * 1.4))


def test_zero_shot_scores_agree(blobs):
    zero_shot = compute_zero_shot(blobs.embeddings, blobs.labels, _prototypes(blobs))
    assert zero_shot.probs.shape == (blobs.labels.size, 4)
    # a positive margin is exactly a given label that wins the softmax
    np.testing.assert_array_equal(zero_shot.margin > 0,
                                  zero_shot.log_probs.argmax(axis=1) == blobs.labels)


def test_zero_shot_errors(blobs):
    with pytest.raises(ValueError, match="method='zero_shot' needs class_embeddings"):
        find_label_issues(blobs.embeddings, blobs.labels, method="zero_shot")
    with pytest.raises(ValueError, match="cutoff must be None, 'count' or 'calibrated'"):
        find_label_issues(blobs.embeddings, blobs.labels, method="zero_shot", cutoff="mean",
                          class_embeddings=blobs.class_embeddings)
    with pytest.raises(ValueError, match="class_embeddings must be"):
        find_label_issues(blobs.embeddings, blobs.labels, method="zero_shot",
                          class_embeddings=blobs.class_embeddings[:, :5])


def test_bench_runs_zero_shot_with_text(blobs):
    result = run_bench(blobs.embeddings, blobs.labels, true_labels=blobs.true_labels,
                       methods=["zero_shot"], text_features=_prototypes(blobs))
    assert result["methods"]["zero_shot"]["auroc"] > 0.95
    with pytest.raises(ValueError, match="'zero_shot' needs text_features"):
        run_bench(blobs.embeddings, blobs.labels, true_labels=blobs.true_labels,
                  methods="zero_shot")


@pytest.mark.filterwarnings("ignore:nothing was flagged")  # random weights: may carry no signal
def test_real_text_path_with_tiny_clip(tiny_clip, write_images, tmp_path):
    """Real prompt embeddings (random weights: behaviour, not quality) through a scan."""
    from clipsei.images.embed import embed_images
    from clipsei.images.prompts import encode_class_prompts
    from clipsei.pipeline import scan

    write_images(tmp_path / "images", n_per_class=6, classes=("cat", "dog", "eel"))
    text = encode_class_prompts(["cat", "dog", "eel"], tiny_clip)
    embedded = embed_images(tmp_path / "images", tiny_clip, progress=False)
    issues = find_label_issues(embedded.embeddings, embedded.labels, method="zero_shot",
                               class_embeddings=text)
    zero_shot = compute_zero_shot(embedded.embeddings, embedded.labels, text)
    np.testing.assert_allclose(issues["zero_shot_prob_score"], zero_shot.given_prob, rtol=1e-6)
    assert np.isfinite(issues[ZERO_SHOT_COLUMNS].to_numpy()).all()
    result = scan(tmp_path / "images", model=tiny_clip, method="zero_shot", progress=False,
                  out=tmp_path / "zs")
    assert result.entropy_history.shape == (1, 18)
    assert (tmp_path / "zs" / "report.html").is_file()
    default = scan(tmp_path / "images", model=tiny_clip, progress=False, n_epochs=2, n_folds=2)
    prior = default.issues.attrs["zero_shot_prior"]
    assert 0 <= prior["share"] <= 1 and prior["temperature"] > 0
    assert np.isfinite(default.issues["zero_shot_prob_score"]).all()


def test_zero_shot_with_text_unrelated_to_the_labels_flags_nothing():
    rng = np.random.default_rng(0)
    embeddings, labels = rng.standard_normal((400, 32)), rng.integers(0, 2, 400)
    with pytest.warns(UserWarning, match="no class information"):
        issues = find_label_issues(embeddings, labels, method="zero_shot",
                                   class_embeddings=rng.standard_normal((2, 32)))
    assert not issues["is_label_issue"].any()


def test_cli_bench_takes_the_text_side(blobs, tmp_path, capsys):
    from clipsei.cli import main

    path = tmp_path / "blobs.npz"
    np.savez(path, features=blobs.embeddings, labels=blobs.labels,
             true_labels=blobs.true_labels, text_features=_prototypes(blobs))
    assert main(["bench", str(path), "--methods", "zero_shot,knn"]) == 0
    assert "zero_shot" in capsys.readouterr().out
    np.savez(path, features=blobs.embeddings, labels=blobs.labels,
             true_labels=blobs.true_labels)
    assert main(["bench", str(path), "--methods", "zero_shot"]) == 2
    assert "'zero_shot' needs text_features" in capsys.readouterr().err
