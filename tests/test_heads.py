import dataclasses

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


def test_a_head_in_a_batch_depends_only_on_its_own_plan_and_the_shared_row_order(blobs):
    """Heads of one call share each step's rows, not their labels, temperatures or weights:
    another head's labels and temperature do not move a head, and the same plans give the
    same dynamics twice."""
    rng = np.random.default_rng(3)
    relabelled = blobs.labels.copy()
    relabelled[:30] = 4  # a threshold run's extra class
    first = plan_head(blobs.labels, rng, fit_rows=np.arange(150), logit_scale=5.0)
    second = plan_head(relabelled, rng, logit_scale=10.0)
    changed = dataclasses.replace(second, labels=(blobs.labels + 1) % 5, logit_scale=2.0)
    options = dict(n_classes=5, n_epochs=3, batch_size=32, lr=0.2)
    together = train_heads(blobs.embeddings, [first, second], **options)
    again = train_heads(blobs.embeddings, [first, second], **options)
    beside_other = train_heads(blobs.embeddings, [first, changed], **options)
    for name in ("mean_probs", "margin_history", "agreement_history"):
        np.testing.assert_array_equal(getattr(together[0], name), getattr(again[0], name))
        np.testing.assert_array_equal(getattr(together[1], name), getattr(again[1], name))
        np.testing.assert_array_equal(getattr(together[0], name),
                                      getattr(beside_other[0], name))
    assert not np.allclose(together[1].mean_probs, beside_other[1].mean_probs)
    # each head learnt its own labels: only the relabelled run moves rows 0-29 to class 4
    assert together[1].mean_probs[:30, 4].mean() > 2 * together[0].mean_probs[:30, 4].mean()


def test_rows_outside_a_heads_fit_rows_get_no_gradient_in_shared_batches(blobs):
    """A held-out row sits in the shared minibatches (another head trains on it) with loss
    weight 0 for the head that holds it out: relabelling it for that head changes nothing,
    bit for bit, and the other head is untouched too."""
    rng = np.random.default_rng(5)
    held_out = plan_head(blobs.labels, rng, fit_rows=np.arange(120))
    every_row = plan_head(blobs.labels, rng)
    relabelled = blobs.labels.copy()
    relabelled[120:] = (relabelled[120:] + 1) % 4
    options = dict(n_classes=4, n_epochs=3, batch_size=48, lr=0.2)
    first = train_heads(blobs.embeddings, [held_out, every_row], **options)
    second = train_heads(blobs.embeddings,
                         [dataclasses.replace(held_out, labels=relabelled), every_row], **options)
    for head in range(2):
        np.testing.assert_array_equal(first[head].mean_probs, second[head].mean_probs)
        np.testing.assert_array_equal(first[head].entropy_history[:, :120],
                                      second[head].entropy_history[:, :120])


def test_short_last_batch_and_a_head_without_rows(blobs):
    """200 rows in batches of 64 (the last one 8 rows) train the heads; a head with no
    trainable row keeps its initial weights (the same finite statistics every epoch)."""
    rng = np.random.default_rng(7)
    plans = [plan_head(blobs.labels, rng),
             plan_head(blobs.labels, rng, fit_rows=np.array([], dtype=np.int64))]
    trained, idle = train_heads(blobs.embeddings, plans, n_classes=4, n_epochs=4,
                                batch_size=64, lr=0.2)
    assert (trained.mean_probs.argmax(axis=1) == blobs.true_labels).mean() > 0.9
    margins = idle.margin_history.astype(np.float32)
    assert np.isfinite(margins).all()
    np.testing.assert_array_equal(margins, np.broadcast_to(margins[0], margins.shape))
    # a batch larger than the set: one step an epoch
    alone = train_heads(blobs.embeddings, plans[:1], n_classes=4, n_epochs=4, batch_size=512,
                        lr=0.2)[0]
    assert (alone.mean_probs.argmax(axis=1) == blobs.true_labels).mean() > 0.9


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
    import torch

    if not torch.backends.mps.is_available():  # it said the model could not load, later
        with pytest.raises(ValueError, match="^device mps was asked for but this machine's torch"):
            resolve_device("mps")
