"""One repeat of the stochastic stages: threshold-sample runs, then the held-out rounds."""

from __future__ import annotations

import numpy as np

from . import options as _options
from .fusion import Signals
from .heads import SCALE_SELECTION_MAX_SAMPLES, select_logit_scale
from .heldout import run_heldout_rounds
from .progress import StageProgress
from .threshold import draw_threshold_slices, run_threshold_samples


def run_repeats(features, labels, votes, *, params: dict, heldout: bool,
                default_logit_scale: float, n_repeats: int, rng, progress=None,
                prompt_task=None) -> tuple[Signals, float | None]:
    """``n_repeats`` repeats of :func:`run_repeat`, averaged; with ``heldout``, the held-out
    heads' temperature is selected first. Returns ``(signals, heldout_logit_scale or None)``.
    progress : None or a callback ``(stage, done, total)``, advanced once per head epoch."""
    n_classes = votes.shape[1]
    batches = heldout + n_repeats * (1 + 2 * heldout)  # train_heads calls
    on_epoch = StageProgress(progress, "heads", batches * params["n_epochs"]).advance
    heldout_logit_scale = None
    if heldout:
        heldout_logit_scale = select_logit_scale(
            features.heldout, labels, n_classes=n_classes,
            class_embeddings=features.heldout_init, random_state=rng,
            n_folds=params["n_folds"], on_epoch=on_epoch,
            **_options.head_options(params, min(labels.size, SCALE_SELECTION_MAX_SAMPLES)))
    repeats = [run_repeat(features, labels, votes, params=params, heldout=heldout,
                          default_logit_scale=default_logit_scale,
                          heldout_logit_scale=heldout_logit_scale, rng=rng, on_epoch=on_epoch,
                          prompt_task=prompt_task)
               for _ in range(n_repeats)]
    return Signals.mean_of(repeats), heldout_logit_scale


def run_repeat(features, labels, votes, *, params: dict, heldout: bool,
               default_logit_scale: float, heldout_logit_scale, rng, on_epoch,
               prompt_task=None) -> Signals:
    """The signals of one repeat for ``labels`` (N,) and neighbour ``votes`` (N, K).

    features : the prepared features (:func:`clipsei.engine.features.prepare_features`);
    params : the estimator's parameters; heldout : also run the held-out rounds (at
    ``heldout_logit_scale``); default_logit_scale : the in-sample heads' temperature when
    ``params["logit_scale"]`` is None; prompt_task : prompt-tuned in-sample heads or None.
    """
    n_classes = votes.shape[1]
    head_options = dict(_options.head_options(params, labels.size), on_epoch=on_epoch)
    fraction = _options.threshold_fraction_for(params["threshold_fraction"], n_classes)
    slices = draw_threshold_slices(labels.size, fraction, params["n_threshold_runs"], rng)
    if prompt_task is not None:
        runs = prompt_task.run_threshold_samples(
            labels, slices=slices, rng=rng, n_epochs=params["n_epochs"],
            batch_size=params["batch_size"], lr=params["lr"], logit_scale=params["logit_scale"])
    else:
        runs = run_threshold_samples(
            features.in_sample, labels, n_classes=n_classes, slices=slices,
            head_init=features.head_init, rng=rng,
            logit_scale=params["logit_scale"] or default_logit_scale, **head_options)
    knn = votes[np.arange(labels.size), labels]
    heldout_scores = None
    if heldout:
        heldout_scores = run_heldout_rounds(
            features.heldout, labels, n_classes=n_classes, votes=votes,
            in_sample_aum=runs.real.aum, knn=knn, rng=rng,
            class_embeddings=features.heldout_init, n_folds=params["n_folds"],
            logit_scale=heldout_logit_scale, **head_options)
    return Signals(threshold_runs=runs, heldout=heldout_scores, votes=votes, knn=knn)
