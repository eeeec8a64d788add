import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clipsei.engine.detect import LabelIssueDetector
from clipsei.engine.prior import fit_prior_weight
from clipsei.engine.zero_shot import log_softmax
from clipsei.evaluation.synthetic import make_noisy_blobs


def _experts(rng, n=2000, k=5, strength=(3.0, 0.0)):
    """Given labels and two experts' log-probabilities of given strengths (0 = noise)."""
    labels = rng.integers(0, k, n)
    onehot = np.eye(k)[labels]
    default, text = (log_softmax(s * onehot + rng.normal(size=(n, k))) for s in strength)
    return labels, np.exp(default), text


def test_prior_weight_follows_the_informative_expert(rng):
    labels, default_probs, text = _experts(rng, strength=(0.5, 3.0))
    weight = fit_prior_weight(default_probs, text, labels, random_state=0)
    assert weight.share > 0.6 and weight.heldout_gain > 2 * weight.gain_se


def test_prior_weight_is_zero_for_uninformative_text(rng):
    labels, default_probs, text = _experts(rng, strength=(3.0, 0.0))
    weight = fit_prior_weight(default_probs, text, labels, random_state=0)
    assert weight.share == 0.0


def test_text_sharing_the_defaults_errors_gets_no_share(rng):
    # a weaker copy of the default's own classifier (same errors): nothing to add, however
    # accurate; the same accuracy with independent errors counts
    labels, default_probs, _ = _experts(rng, strength=(2.0, 0.0))
    shared = log_softmax(0.5 * np.log(default_probs) + 0.3 * rng.normal(size=default_probs.shape))
    assert fit_prior_weight(default_probs, shared, labels, random_state=0).share == 0.0
    onehot = np.eye(5)[labels]
    independent = log_softmax(2.0 * onehot + rng.normal(size=onehot.shape))
    assert fit_prior_weight(default_probs, independent, labels, random_state=0).share > 0.3


def _fit(blobs, text, **options):
    return LabelIssueDetector(**options).fit(blobs.embeddings, blobs.labels,
                                             class_embeddings=text)


def test_random_text_leaves_the_default_unchanged(blobs):
    text = np.random.default_rng(123).standard_normal(blobs.class_embeddings.shape)
    with_prior, without = _fit(blobs, text), _fit(blobs, text, text_prior=False)
    assert with_prior.zero_shot_prior_["share"] == 0.0
    assert without.zero_shot_prior_ is None
    np.testing.assert_array_equal(with_prior.issues_["label_score"],
                                  without.issues_["label_score"])
    np.testing.assert_array_equal(with_prior.issues_["is_label_issue"],
                                  without.issues_["is_label_issue"])
    assert "zero_shot_prob_score" in with_prior.issues_.columns


def test_informative_text_gets_a_clear_share():
    # noisy, spread blobs: 200 noisy labels teach the heads less than the clean class means
    blobs = make_noisy_blobs(200, n_classes=4, n_features=128, noise_rate=0.3,
                             cluster_std=1.5, random_state=0)
    text = np.stack([blobs.embeddings[blobs.true_labels == k].mean(axis=0) for k in range(4)])
    with_prior, without = _fit(blobs, text), _fit(blobs, text, text_prior=False)
    prior = with_prior.zero_shot_prior_
    assert prior["share"] > 0.3 and prior["heldout_gain"] > 0
    assert with_prior.issues_.attrs["zero_shot_prior"] == prior
    scores = with_prior.issues_["label_score"]
    assert not np.array_equal(scores, without.issues_["label_score"])  # the prior entered
    assert roc_auc_score(blobs.is_flipped, -scores) > 0.95


def test_text_prior_option_is_checked(blobs):
    with pytest.raises(TypeError, match="text_prior must be a bool"):
        _fit(blobs, blobs.class_embeddings, text_prior="yes")


@pytest.mark.filterwarnings("ignore:nothing was flagged")  # random weights: may carry no signal
def test_scan_prompts_reach_every_text_consumer(tiny_clip, write_images, tmp_path):
    """scan with a CLIP model -> class prompts -> in-sample heads, prior, zero_shot: another
    prompt set changes what each consumer computes; text_prior=False removes the prior."""
    import json

    from clipsei.images.embed import embed_images
    from clipsei.images.prompts import encode_class_prompts
    from clipsei.pipeline import scan

    write_images(tmp_path / "images", n_per_class=6, classes=("cat", "dog", "eel"))
    options = dict(model=tiny_clip, progress=False, n_epochs=2, n_folds=2)
    generic = scan(tmp_path / "images", prompts="generic", out=tmp_path / "g", **options)
    other = scan(tmp_path / "images", prompts="histology", **options)
    no_prior = scan(tmp_path / "images", prompts="generic", text_prior=False, **options)
    prior = generic.issues.attrs["zero_shot_prior"]
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["zero_shot_prior"] == pytest.approx(prior)
    # the prior's zero-shot probabilities are those of the prompt set's class text
    text = encode_class_prompts(["cat", "dog", "eel"], tiny_clip, prompt_set="generic")
    embedded = embed_images(tmp_path / "images", tiny_clip, progress=False)
    expected = LabelIssueDetector(method="zero_shot").fit(
        embedded.embeddings, embedded.labels, class_embeddings=text).issues_
    np.testing.assert_allclose(generic.issues["zero_shot_prob_score"],
                               expected["zero_shot_prob_score"], rtol=1e-5)
    assert not np.allclose(generic.issues["zero_shot_prob_score"],
                           other.issues["zero_shot_prob_score"])
    assert other.issues.attrs["zero_shot_prior"]["temperature"] != prior["temperature"]
    # the in-sample heads start from the class text: their AUM moves with the prompts
    assert not np.allclose(generic.issues["aum_score"], other.issues["aum_score"])
    assert no_prior.issues.attrs["zero_shot_prior"] is None
    assert "zero_shot_prob_score" not in no_prior.issues.columns
