"""Matplotlib figures of a scan: entropy trajectories, the score histogram, per-class error rates.

matplotlib is imported inside each function (``pip install 'clipsei[plots]'``). Every function
returns its ``Figure`` and never calls ``show``; pass ``ax`` to draw into an existing figure.
"""

from __future__ import annotations

import numpy as np

_FLAG_COLOR = "#c0392b"
_CLEAN_COLOR = "#7f8c8d"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is in the test extra
        raise ImportError(
            "plots need matplotlib; install it with pip install 'clipsei[plots]'"
        ) from err
    return plt


def _figure_and_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _class_name(class_names, label) -> str:
    if class_names is None or not 0 <= label < len(class_names):
        return str(label)
    return str(class_names[label])


def plot_trajectories(entropy_history, ids, *, agreement_history=None, labels=None,
                      class_names=None, ax=None):
    """Plot the per-epoch softmax entropy (nats) of the samples ``ids``, one line each.

    Where ``agreement_history`` (E, N) bool is given, epochs in which the prediction
    disagreed with the given label are marked with a cross: a sample that is entropic
    *and* disagrees throughout is the SEI signature of a wrong label. ``labels`` and
    ``class_names`` put each sample's given class into the legend.
    """
    entropy_history = np.asarray(entropy_history, dtype=np.float32)
    if entropy_history.ndim != 2:
        raise ValueError(
            f"entropy_history must be 2-D (epochs, samples); got shape {entropy_history.shape}"
        )
    ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
    n_samples = entropy_history.shape[1]
    if ids.size == 0 or ids.min() < 0 or ids.max() >= n_samples:
        raise ValueError(f"ids must be a non-empty list of ints in [0, {n_samples}); got {ids}")
    fig, ax = _figure_and_axes(ax, (6.5, 3.5))
    epochs = np.arange(1, entropy_history.shape[0] + 1)
    for sample in ids:
        label = f"#{sample}"
        if labels is not None:
            label += f" ({_class_name(class_names, int(labels[sample]))})"
        (line,) = ax.plot(epochs, entropy_history[:, sample], lw=1.5, label=label)
        if agreement_history is not None:
            wrong = ~np.asarray(agreement_history)[:, sample].astype(bool)
            ax.plot(epochs[wrong], entropy_history[wrong, sample], "x", ms=4,
                    color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("entropy (nats)")
    title = "Entropy per epoch"
    if agreement_history is not None:
        title += " (x = prediction disagrees with the given label)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_score_histogram(scores, *, cutoff=None, is_label_issue=None, bins=50,
                         score_name="label_score", ax=None):
    """Histogram of per-sample scores (lower = more likely mislabeled) with the cutoff.

    With ``is_label_issue`` the flagged and kept samples are stacked in two colours.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {scores.shape}")
    fig, ax = _figure_and_axes(ax, (6.5, 3.2))
    finite = np.isfinite(scores)
    edges = np.histogram_bin_edges(scores[finite], bins=bins)
    if is_label_issue is None:
        ax.hist(scores[finite], bins=edges, color=_CLEAN_COLOR)
    else:
        flagged = np.asarray(is_label_issue, dtype=bool)
        ax.hist([scores[finite & ~flagged], scores[finite & flagged]], bins=edges,
                stacked=True, color=[_CLEAN_COLOR, _FLAG_COLOR],
                label=[f"kept ({(~flagged).sum()})", f"flagged ({flagged.sum()})"])
    if cutoff is not None and np.isfinite(cutoff):
        ax.axvline(cutoff, color="black", ls="--", lw=1, label=f"cutoff {cutoff:.3g}")
    ax.set_xlabel(f"{score_name} (lower = more likely mislabeled)")
    ax.set_ylabel("images")
    if is_label_issue is not None or cutoff is not None:
        ax.legend(fontsize=8)
    return fig


def plot_class_error_rates(rates, *, class_names=None, counts=None,
                           quantity="estimated label-error rate", ax=None):
    """Horizontal bars of a per-class rate in [0, 1] (K,), by default the estimated share of
    wrong labels of each class; ``quantity`` names what the rates are (axis and title).

    ``counts`` (K,) adds each class's number of images to its tick label.
    """
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0:
        raise ValueError(f"rates must be a non-empty 1-D array; got shape {rates.shape}")
    names = [_class_name(class_names, k) for k in range(rates.size)]
    if counts is not None:
        names = [f"{name} (n={int(n)})" for name, n in zip(names, counts)]
    fig, ax = _figure_and_axes(ax, (6.0, 0.6 + 0.3 * rates.size))
    positions = np.arange(rates.size)
    ax.barh(positions, rates, color=_FLAG_COLOR)
    for y, rate in zip(positions, rates):
        ax.text(rate, y, f" {rate:.1%}", va="center", fontsize=8)
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(0.05, float(np.nanmax(rates, initial=0.0)) * 1.25))
    ax.set_xlabel(quantity)
    ax.set_title(f"{quantity[:1].upper()}{quantity[1:]} per class", fontsize=10)
    return fig


def plot_flagged_grid(images, labels, *, neighbor_images=None, neighbor_labels=None,
                      titles=None, figsize_per_image=1.6):
    """A grid of images, one row each, with their nearest neighbours to the right.

    ``images`` is a list of PIL images or arrays; ``labels`` their caption (e.g.
    ``"cat -> dog"``); ``neighbor_images``/``neighbor_labels`` lists of lists, one per row.
    """
    plt = _pyplot()
    n_rows = len(images)
    if n_rows == 0:
        raise ValueError("images must hold at least one image; got none")
    n_cols = 1 + max((len(row) for row in neighbor_images or []), default=0)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout="constrained",
                             figsize=(figsize_per_image * n_cols, figsize_per_image * n_rows))
    for row in range(n_rows):
        cells = [(images[row], labels[row], True)]
        if neighbor_images:
            cells += [(img, lab, False) for img, lab in
                      zip(neighbor_images[row], neighbor_labels[row])]
        for col, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if col < len(cells):
                image, caption, is_query = cells[col]
                ax.imshow(image, cmap="gray")
                ax.set_title(caption, fontsize=7, color=_FLAG_COLOR if is_query else "black")
        if titles is not None:
            axes[row][0].text(-0.05, 0.5, titles[row], transform=axes[row][0].transAxes,
                              rotation=90, ha="right", va="center", fontsize=7)
    return fig
