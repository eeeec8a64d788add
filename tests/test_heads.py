import numpy as np
import pytest

from clipsei._device import resolve_device
from clipsei.engine.heads import (plan_head, select_logit_scale, train_crossfit_head, train_head,
                                  train_heads)
from clipsei.evaluation.synthetic import make_noisy_blobs


def test_train_head_records_every_epoch(blobs):
    dynamics = train_head(blobs.embeddings, blobs.labels, n_classes=4, n_epochs=3,
                          random_state=0)
    assert dynamics.entropy_history.shape == (3, 200)
    assert dynamics.entropy_history.dtype == np.float16
    assert dynamics.margin_history.dtype == np.float16
    assert dynamics.agreement_history.dtype == bool
    np.testing.assert_allclose(dynamics.mean_probs.sum(axis=1), 1, rtol=1e-5)
    entropy = dynamics.entropy_history.astype(np.float32)
    assert (entropy >= 0).all() and (entropy <= np.log(4) + 1e-3).all()
    # agreement is exactly "margin >= 0"
    np.testing.assert_array_equal(dynamics.agreement_history,
                                  dynamics.margin_history.astype(np.float32) >= 0)


def test_same_seed_same_dynamics(blobs):
    first = train_head(blobs.embeddings, blobs.labels, n_classes=4, n_epochs=2, random_state=7)
    again = train_head(blobs.embeddings, blobs.labels, n_classes=4, n_epochs=2, random_state=7)
    np.testing.assert_array_equal(first.margin_history, again.margin_history)


def test_rows_outside_fit_rows_do_not_train_the_head(blobs):
    fit_rows = np.arange(100)
    relabelled = blobs.labels.copy()
    relabelled[100:] = (relabelled[100:] + 1) % 4
    first = train_head(blobs.embeddings, blobs.labels, n_classes=4, n_epochs=2,
                       fit_rows=fit_rows, random_state=0)
    second = train_head(blobs.embeddings, relabelled, n_classes=4, n_epochs=2,
                        fit_rows=fit_rows, random_state=0)
    np.testing.assert_allclose(first.mean_probs, second.mean_probs, rtol=1e-6)


def test_crossfit_scores_never_see_their_own_label(blobs):
    relabelled = blobs.labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 4
    first = train_crossfit_head(blobs.embeddings, blobs.labels, n_classes=4, n_epochs=2,
                                random_state=0)
    second = train_crossfit_head(blobs.embeddings, relabelled, n_classes=4, n_epochs=2,
                                 random_state=0)
    np.testing.assert_allclose(first.mean_probs[0], second.mean_probs[0], rtol=1e-6)
    # held-out probabilities still put the planted flips' true class first
    predicted = first.mean_probs.argmax(axis=1)
    assert (predicted == blobs.true_labels).mean() > 0.9


def test_crossfit_train_mask_keeps_rows_out_of_training(blobs):
    """A row outside ``train_mask`` changes nothing when relabelled, even for the heads of
    other folds; it is still recorded."""
    mask = np.ones(blobs.labels.size, dtype=bool)
    mask[:20] = False
    relabelled = blobs.labels.copy()
    relabelled[:20] = (relabelled[:20] + 1) % 4
    options = dict(n_classes=4, n_epochs=2, train_mask=mask, random_state=0)
    first = train_crossfit_head(blobs.embeddings, blobs.labels, **options)
    second = train_crossfit_head(blobs.embeddings, relabelled, **options)
    np.testing.assert_allclose(first.mean_probs, second.mean_probs, rtol=1e-6)
    assert np.isfinite(first.margin_history[:, :20].astype(np.float32)).all()
    with pytest.raises(ValueError, match="train_mask must have shape"):
        train_crossfit_head(blobs.embeddings, blobs.labels, n_classes=4, train_mask=mask[:5])


def test_heads_trained_together_match_heads_trained_alone(blobs):
    """Stacked heads with different rows, labels, temperatures and step counts per epoch
    train exactly as each would alone (padding and idle steps leave a head untouched)."""
    rng = np.random.default_rng(3)
    relabelled = blobs.labels.copy()
    relabelled[:30] = 4  # a threshold run's extra class
    plans = [plan_head(blobs.labels, rng, fit_rows=np.arange(150), logit_scale=5.0),
             plan_head(relabelled, rng, logit_scale=10.0),
             plan_head(blobs.labels, rng, fit_rows=np.arange(7), record_rows=np.arange(100, 200))]
    options = dict(n_classes=5, n_epochs=3, batch_size=32, lr=0.2)
    together = train_heads(blobs.embeddings, plans, **options)
    for plan, run in zip(plans, together):
        alone = train_heads(blobs.embeddings, [plan], **options)[0]
        assert run.mean_probs.shape == (plan.record_rows.size, 5)
        np.testing.assert_allclose(run.mean_probs, alone.mean_probs, atol=1e-5)
        np.testing.assert_allclose(run.margin_history.astype(np.float32),
                                   alone.margin_history.astype(np.float32), atol=1e-2)
    # each head learnt its own labels: only the relabelled run moves rows 0-29 to class 4
    assert together[1].mean_probs[:30, 4].mean() > 2 * together[0].mean_probs[:30, 4].mean()


def test_select_logit_scale_prefers_soft_heads_for_noisier_labels():
    clean = make_noisy_blobs(200, n_classes=2, noise_rate=0.0, cluster_std=0.8, random_state=0)
    noisy = make_noisy_blobs(200, n_classes=2, noise_rate=0.4, cluster_std=0.8, random_state=0)
    options = dict(n_classes=2, n_epochs=5, candidates=(1.0, 4.0, 16.0), random_state=0)
    clean_scale = select_logit_scale(clean.embeddings, clean.labels, **options)
    noisy_scale = select_logit_scale(noisy.embeddings, noisy.labels, **options)
    assert clean_scale in (1.0, 4.0, 16.0)
    assert noisy_scale < clean_scale


def test_resolve_device():
    assert resolve_device("auto").type == "cpu"  # conftest hides GPUs
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("nonsense")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
