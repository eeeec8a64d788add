import numpy as np

from clipsei.engine.heads import TrainingDynamics
from clipsei.engine.threshold import (ThresholdRunScores, combine_threshold_runs,
                                      draw_threshold_slices, run_threshold_samples)


def test_threshold_slices_are_disjoint_and_sized():
    slices = draw_threshold_slices(100, 0.2, 2, np.random.default_rng(0))
    assert [s.size for s in slices] == [20, 20]
    assert np.intersect1d(*slices).size == 0


def _run(score, n_epochs=2):
    """Dynamics whose every history is ``score`` (N,), to follow values through the runs."""
    history = np.tile(score.astype(np.float16), (n_epochs, 1))
    return TrainingDynamics(entropy_history=history, agreement_history=history > 0,
                            margin_history=history, given_prob_history=history,
                            mean_probs=np.full((score.size, 3), 1 / 3, np.float32))


def test_each_sample_is_scored_from_the_runs_where_it_was_real():
    slices = [np.array([0, 1]), np.array([2, 3])]
    runs = [_run(np.full(6, 1.0)), _run(np.full(6, 3.0))]
    combined = combine_threshold_runs(runs, slices, n_classes=2)
    # rows 0-1 were threshold samples in run 1, so only run 2 scores them; 2-3 the reverse;
    # rows 4-5 were never threshold samples: the mean of both runs
    np.testing.assert_allclose(combined.real.aum, [3, 3, 1, 1, 2, 2])
    np.testing.assert_allclose(combined.threshold.aum, [1, 1, 3, 3])
    # histories: each column from the first run where the sample was real
    np.testing.assert_allclose(combined.entropy_history[0], [3, 3, 1, 1, 1, 1])
    np.testing.assert_allclose(combined.head_probs.sum(axis=1), 1.0)


def test_repeats_average_real_scores_and_pool_threshold_scores():
    slices = [np.array([0, 1]), np.array([2, 3])]
    first = combine_threshold_runs([_run(np.full(6, 1.0)), _run(np.full(6, 3.0))], slices,
                                   n_classes=2)
    second = combine_threshold_runs([_run(np.full(6, 3.0)), _run(np.full(6, 5.0))], slices,
                                    n_classes=2)
    mean = ThresholdRunScores.mean_of([first, second])
    np.testing.assert_allclose(mean.real.aum, [4, 4, 2, 2, 3, 3])
    assert mean.threshold.aum.size == 8
    np.testing.assert_array_equal(mean.entropy_history, first.entropy_history)


def test_threshold_samples_score_below_real_ones(blobs):
    x, labels = blobs.embeddings, blobs.labels
    rng = np.random.default_rng(0)
    slices = draw_threshold_slices(labels.size, 0.2, 2, rng)
    scores = run_threshold_samples(x, labels, n_classes=4, slices=slices, head_init=None, rng=rng,
                                   n_epochs=3, batch_size=32, logit_scale=10.0, device="cpu")
    assert scores.threshold.aum.size == 80 and scores.real.aum.shape == (200,)
    assert np.median(scores.threshold.aum) < np.median(scores.real.aum[~blobs.is_flipped])
