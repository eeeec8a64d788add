import numpy as np

from clipsei.head import TrainingDynamics
from clipsei.threshold import combine_threshold_runs, draw_threshold_slices


def test_threshold_slices_are_disjoint_and_sized():
    slices = draw_threshold_slices(100, 0.2, 2, np.random.default_rng(0))
    assert [s.size for s in slices] == [20, 20]
    assert np.intersect1d(*slices).size == 0


def _run(score, labels, n_epochs=2):
    """A fake run whose every score is ``score`` (N,), to follow values through the bookkeeping."""
    n_samples = labels.size
    history = np.tile(score.astype(np.float16), (n_epochs, 1))
    dynamics = TrainingDynamics(entropy_history=history, agreement_history=history > 0,
                                margin_history=history, given_prob_history=history,
                                mean_probs=np.full((n_samples, 3), 1 / 3, np.float32))
    return {"labels": labels, "scores": {"aum": score.astype(float)}, "dynamics": dynamics}


def test_each_sample_is_scored_from_the_runs_where_it_was_real():
    labels = np.array([0, 1, 0, 1, 0, 1])
    slices = [np.array([0, 1]), np.array([2, 3])]
    first, second = labels.copy(), labels.copy()
    first[slices[0]] = 2
    second[slices[1]] = 2
    runs = [_run(np.full(6, 1.0), first), _run(np.full(6, 3.0), second)]
    ids = np.array([[1], [0], [3], [2], [5], [4]])
    sims = np.ones((6, 1), np.float32)
    combined = combine_threshold_runs(runs, slices, 1, labels, 2, ids, sims)
    real = combined["scores_by_scale"][0]["aum"]
    # rows 0-1 were threshold samples in run 1, so only run 2 scores them; 2-3 the reverse;
    # rows 4-5 were never threshold samples: the mean of both runs
    np.testing.assert_allclose(real, [3, 3, 1, 1, 2, 2])
    np.testing.assert_allclose(combined["threshold_scores_by_scale"][0]["aum"], [1, 1, 3, 3])
    # histories: each column from the first run where the sample was real
    np.testing.assert_allclose(combined["entropy_history"][0], [3, 3, 1, 1, 1, 1])
    # threshold samples' neighbour vote for the extra class: rows 0 and 1 are each other's
    # neighbours and both "other" in run 1
    np.testing.assert_allclose(combined["threshold_knn"], [1, 1, 1, 1])
