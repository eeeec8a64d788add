import numpy as np
import pytest

from clipsei.engine.dynamics import (SEIRecorder, compute_aum_scores, compute_dynamics_scores,
                         compute_entropy, compute_epoch_statistics, compute_forgetting_scores,
                         compute_sei_scores)


def test_entropy_matches_definition(rng):
    probs = rng.dirichlet(np.ones(5), size=20)
    expected = -(probs * np.log(probs)).sum(axis=1)
    np.testing.assert_allclose(compute_entropy(probs), expected, rtol=1e-5)
    assert compute_entropy(np.eye(3))[0] == 0.0  # one-hot: zero entropy, no NaN from log(0)
    np.testing.assert_allclose(compute_entropy(np.full((1, 4), 0.25)), [np.log(4)], rtol=1e-6)


def test_epoch_statistics_sign_margin_and_prob():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0]])
    labels = np.array([0, 2, 1])
    stats = compute_epoch_statistics(logits, labels)
    np.testing.assert_array_equal(stats["agrees"], [True, False, True])  # tie counts as agreeing
    np.testing.assert_allclose(stats["margin"], [2.0, -2.0, 0.0])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(stats["given_prob"], probs[[0, 1, 2], labels], rtol=1e-6)
    np.testing.assert_allclose(stats["entropy"], compute_entropy(probs), rtol=1e-5)


def test_sei_is_mean_signed_entropy():
    entropy = np.array([[0.5, 0.2], [0.3, 0.4]], dtype=np.float32)
    agrees = np.array([[True, False], [True, True]])
    np.testing.assert_allclose(compute_sei_scores(entropy, agrees), [0.4, 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        compute_sei_scores(entropy, agrees[:1])


def test_aum_and_forgetting():
    margins = np.array([[1.0, -1.0, 2.0], [3.0, -2.0, -1.0]])
    np.testing.assert_allclose(compute_aum_scores(margins), [2.0, -1.5, 0.5])
    agrees = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0]], dtype=bool)
    # sample 0: agree->disagree->agree (1 forget); 1: never learned (-E); 2: forgets once at the end
    np.testing.assert_array_equal(compute_forgetting_scores(agrees), [-1, -3, -1])


def test_recorder_equals_batch_formulas(rng):
    n_epochs, n_samples, n_classes = 4, 30, 3
    logits = rng.normal(size=(n_epochs, n_samples, n_classes)) * 3
    labels = rng.integers(0, n_classes, n_samples)
    recorder = SEIRecorder()
    history = {key: [] for key in ("entropy", "agrees", "margin", "given_prob")}
    for epoch in range(n_epochs):
        for batch in np.array_split(rng.permutation(n_samples), 3):
            recorder.update(logits[epoch, batch], labels[batch], batch)
        stats = compute_epoch_statistics(logits[epoch], labels)
        for key in history:
            history[key].append(stats[key])
    expected = compute_dynamics_scores(history["entropy"], history["agrees"], history["margin"],
                                       history["given_prob"])
    for name, values in recorder.scores().items():
        np.testing.assert_allclose(values, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_recorder_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    recorder = SEIRecorder()
    recorder.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True),
                    torch.tensor([0, 0]), torch.tensor([5, 2]))
    scores = recorder.scores()
    assert scores["sei"].shape == (6,)
    assert np.isnan(scores["sei"][0]) and scores["sei"][5] > 0 > scores["sei"][2]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"logits": np.zeros(3), "targets": [0], "ids": [0]}, ValueError, "2-D"),
    ({"logits": np.zeros((2, 2)), "targets": [0, 2], "ids": [0, 1]}, ValueError, r"\[0, 2\)"),
    ({"logits": np.zeros((2, 2)), "targets": [0, 1], "ids": [1, 1]}, ValueError, "distinct"),
    ({"logits": np.zeros((2, 2)), "targets": [0.5, 1], "ids": [0, 1]}, TypeError, "integers"),
])
def test_recorder_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SEIRecorder().update(kwargs["logits"], kwargs["targets"], kwargs["ids"])


def test_recorder_scores_before_update():
    with pytest.raises(ValueError, match="before any update"):
        SEIRecorder().scores()
