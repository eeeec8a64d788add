"""Figures are returned (never shown), draw what they say, and reject bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from clipsei.report.plots import (
    plot_class_error_rates,
    plot_flagged_grid,
    plot_score_histogram,
    plot_trajectories,
)


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def test_plot_trajectories(rng):
    entropy = rng.uniform(0, 1, (8, 20)).astype(np.float16)
    agreement = rng.uniform(size=(8, 20)) > 0.3
    fig = plot_trajectories(entropy, [0, 3], agreement_history=agreement,
                            labels=np.arange(20) % 2, class_names=["cat", "dog"])
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_legend().get_lines()] == ["#0 (cat)", "#3 (dog)"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), entropy[:, 0].astype(np.float32))
    assert len(ax.lines) == 4  # a line and its disagreement markers per sample


def test_plot_trajectories_into_given_axes(rng):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plot_trajectories(rng.uniform(size=(3, 5)), 2, ax=ax) is fig


def test_plot_score_histogram(rng):
    scores = rng.uniform(size=100)
    fig = plot_score_histogram(scores, cutoff=0.2, is_label_issue=scores < 0.2, bins=10)
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert sum(heights) == 100
    assert ax.lines[0].get_xdata()[0] == 0.2
    assert "flagged" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_plot_class_error_rates():
    fig = plot_class_error_rates([0.1, 0.25], class_names=["a", "b"], counts=[10, 20])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (n=10)", "b (n=20)"]
    assert [patch.get_width() for patch in ax.patches] == [0.1, 0.25]


def test_plot_flagged_grid(rng):
    images = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2)]
    fig = plot_flagged_grid(images, ["a -> b", "b -> a"], neighbor_images=[images, images[:1]],
                            neighbor_labels=[["a", "b"], ["a"]], titles=["#1", "#2"])
    assert len(fig.axes) == 6 and sum(bool(ax.images) for ax in fig.axes) == 5


@pytest.mark.parametrize("call, match", [
    (lambda: plot_trajectories(np.zeros(4), [0]), "entropy_history must be 2-D"),
    (lambda: plot_trajectories(np.zeros((2, 4)), [4]), r"ids must be .* in \[0, 4\)"),
    (lambda: plot_score_histogram(np.zeros((2, 2))), "scores must be a non-empty 1-D"),
    (lambda: plot_class_error_rates([]), "rates must be a non-empty"),
    (lambda: plot_flagged_grid([], []), "images must hold at least one image"),
])
def test_plot_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
