"""Cosine heads trained over frozen embeddings, recording per-epoch training dynamics.

Logits are ``logit_scale * e @ normalize(W).T + b`` on unit rows ``e``: the logit range stays
``2 * logit_scale`` for the whole run. When class text embeddings are given, ``W`` starts
from them (epoch 0 is the zero-shot classifier). This module plans the heads, runs their
training loop and records every epoch; one step's maths is :mod:`clipsei.engine.head_steps`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .._device import resolve_device
from .._validation import check_random_state
from .dynamics import compute_epoch_statistics
from . import features as _features
from .features import FeatureRows
from .head_steps import SharedOrder, compute_gradients, initial_weights, momentum_step

# rows on which the held-out temperature is chosen (a subsample above it)
SCALE_SELECTION_MAX_SAMPLES = 4000
LOGIT_SCALE_CANDIDATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# a step whose (B, D) @ (D, H*K) product has fewer multiply-adds runs on one CPU thread; on
# 2 shared cores (load 8) two threads lost below ~7.7e8 (forward and backward 1.5e9) and won
# 1.34x at 2.6e9 (1M rows, K = 100), while idle they win ~2x from 2.6e7 up
SPLIT_MIN_MACS = 10**9


@dataclass
class TrainingDynamics:
    """What one training run recorded.

    entropy_history : (E, N) float16, softmax entropy in nats after each epoch.
    agreement_history : (E, N) bool, given-label probability >= best other class's.
    margin_history : (E, N) float16, given-label logit minus the best other logit.
    given_prob_history : (E, N) float16, probability of the given label.
    mean_probs : (N, K) float32, softmax averaged over the epochs.
    """

    entropy_history: np.ndarray
    agreement_history: np.ndarray
    margin_history: np.ndarray
    given_prob_history: np.ndarray
    mean_probs: np.ndarray


@dataclass(frozen=True)
class HeadPlan:
    """One head of a batch: its labels, rows, temperature and seed.

    labels : (N,) int64 given labels (threshold samples relabelled where they are);
    fit_rows / record_rows : int indices trained on / recorded; logit_scale : inverse
    temperature; seed : seeds its initial weights and minibatch order.
    """

    labels: np.ndarray
    fit_rows: np.ndarray
    record_rows: np.ndarray
    logit_scale: float
    seed: int


def plan_head(labels, rng, *, fit_rows=None, record_rows=None,
              logit_scale: float = 10.0) -> HeadPlan:
    """A :class:`HeadPlan`; draws its seed from ``rng`` (one draw, as a sequential run did)."""
    every_row = np.arange(labels.size)
    return HeadPlan(labels=np.asarray(labels), logit_scale=float(logit_scale),
                    fit_rows=every_row if fit_rows is None else np.asarray(fit_rows),
                    record_rows=every_row if record_rows is None else np.asarray(record_rows),
                    seed=int(rng.integers(2**62)))


def train_heads(embeddings: np.ndarray, plans, *, n_classes: int,
                class_embeddings: np.ndarray | None = None, n_epochs: int = 10,
                batch_size: int = 256, lr: float = 0.1, device="auto", on_epoch=None) -> list:
    """Train independent cosine heads together: stacked weights (H, K, D), one shared
    minibatch of rows per step, one (B, D) @ (D, H*K) product and one optimiser step for all.

    Each head draws its initial weights from its own seed and has its own labels, temperature
    and rows: a shared row outside a head's ``fit_rows`` gets loss weight 0 for it, and each
    head's loss is the sum over its rows of the batch divided by the batch's size (per row the
    step of a head trained alone on its rows). The row order is drawn from all the heads'
    seeds. See :func:`train_head` for the settings; ``embeddings`` may also be
    :class:`~clipsei.engine.features.FeatureRows`, whose rows are converted a minibatch at a
    time. ``on_epoch`` (or None) is called with no argument after every epoch. Returns one
    :class:`TrainingDynamics` per plan.
    """
    device = resolve_device(device)
    settings = dict(n_classes=n_classes, n_epochs=n_epochs, batch_size=batch_size, lr=lr)
    plans = list(plans)
    step_macs = min(batch_size, len(embeddings)) * embeddings.shape[1] * len(plans) * n_classes
    with single_thread_on_cpu(device, small=step_macs < SPLIT_MIN_MACS):
        return _train(embeddings, plans, class_embeddings, settings, device, on_epoch)


def train_head(embeddings: np.ndarray, labels: np.ndarray, *, n_classes: int,
               class_embeddings: np.ndarray | None = None, n_epochs: int = 10,
               batch_size: int = 256, lr: float = 0.1, logit_scale: float = 10.0,
               fit_rows: np.ndarray | None = None,
               record_rows: np.ndarray | None = None, device="auto",
               random_state=None) -> TrainingDynamics:
    """Train a cosine head on L2-normalised ``embeddings`` and record every epoch.

    Parameters
    ----------
    embeddings : (N, D) float32, rows L2-normalised (the caller's job).
    labels : (N,) int64 in [0, n_classes), the given labels (threshold samples included).
    class_embeddings : (K', D) float32 or None, initial rows of ``W`` for classes
        ``0 .. K'-1`` (e.g. class-prompt text embeddings); other rows start small random.
    n_epochs, batch_size, lr : SGD (momentum 0.9) settings; the learning rate
        follows a cosine schedule from ``lr`` down to 0.
    logit_scale : inverse temperature of the cosine logits (logit range ``2*logit_scale``).
    fit_rows : (M,) int indices to train on, or None for all rows.
    record_rows : (R,) int indices whose trajectories are recorded, or None for all rows;
        the histories are then (E, R) and ``mean_probs`` (R, K). Rows outside ``fit_rows``
        get held-out (out-of-sample) trajectories.
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
    random_state : None, int or numpy Generator; seeds init and minibatch order.
    """
    plan = plan_head(labels, check_random_state(random_state), fit_rows=fit_rows,
                     record_rows=record_rows, logit_scale=logit_scale)
    return train_heads(embeddings, [plan], n_classes=n_classes,
                       class_embeddings=class_embeddings, n_epochs=n_epochs,
                       batch_size=batch_size, lr=lr, device=device)[0]


def train_crossfit_head(embeddings: np.ndarray, labels: np.ndarray, *, n_folds: int = 5,
                        train_mask: np.ndarray | None = None, random_state=None,
                        logit_scale: float = 10.0, **options) -> TrainingDynamics:
    """Held-out training dynamics: every sample is recorded by heads that never saw it.

    The rows are split into ``n_folds`` random folds; for each fold a head is trained on the
    others (see :func:`train_head` for ``options``; the folds' heads train together) and the
    fold's trajectories are kept. ``train_mask`` : (N,) bool or None; rows where it is False
    are never trained on, only recorded (e.g. the suspects of a first round, left out of a
    second, pruned one); a fold left with no trainable rows (only on tiny sets) keeps its
    head's initial weights. Returns dynamics for all N rows, each from its own fold's head.
    """
    plans = plan_crossfit(labels, check_random_state(random_state), n_folds=n_folds,
                          train_mask=train_mask, logit_scale=logit_scale)
    return merge_folds(train_heads(embeddings, plans, **options), plans)


def plan_crossfit(labels, rng, *, n_folds: int, train_mask=None,
                  logit_scale: float = 10.0) -> list:
    """The ``n_folds`` :class:`HeadPlan` of a cross-fitted head (folds drawn from ``rng``)."""
    folds = rng.permutation(labels.size) % n_folds
    trainable = (np.ones(labels.size, dtype=bool) if train_mask is None
                 else np.asarray(train_mask, dtype=bool))
    if trainable.shape != labels.shape:
        raise ValueError(f"train_mask must have shape {labels.shape}; got {trainable.shape}")
    return [plan_head(labels, rng, fit_rows=np.flatnonzero((folds != fold) & trainable),
                      record_rows=np.flatnonzero(folds == fold), logit_scale=logit_scale)
            for fold in range(n_folds)]


def merge_folds(runs, plans) -> TrainingDynamics:
    """One (E, N) dynamics from the folds' runs, each row from the run that recorded it."""
    n_samples = plans[0].labels.size
    merged = _empty_dynamics(runs[0], n_samples)
    for run, plan in zip(runs, plans):
        for name in _HISTORIES:
            getattr(merged, name)[:, plan.record_rows] = getattr(run, name)
        merged.mean_probs[plan.record_rows] = run.mean_probs
    return merged


_HISTORIES = ("entropy_history", "agreement_history", "margin_history", "given_prob_history")


def _empty_dynamics(like: TrainingDynamics, n_samples: int) -> TrainingDynamics:
    """Uninitialised dynamics for ``n_samples`` rows, epochs and dtypes as in ``like``."""
    n_epochs, n_classes = like.entropy_history.shape[0], like.mean_probs.shape[1]
    arrays = {name: np.empty((n_epochs, n_samples), getattr(like, name).dtype)
              for name in _HISTORIES}
    return TrainingDynamics(**arrays, mean_probs=np.empty((n_samples, n_classes), np.float32))


def select_logit_scale(embeddings: np.ndarray, labels: np.ndarray, *, n_classes: int,
                       candidates=LOGIT_SCALE_CANDIDATES,
                       max_samples: int = SCALE_SELECTION_MAX_SAMPLES,
                       n_folds: int = 5, random_state=None, **options) -> float:
    """The temperature whose held-out probabilities best predict the *given* labels.

    Cross-fitted heads at each candidate ``logit_scale`` on at most ``max_samples`` rows
    (all candidates' folds train together); the winner has the lowest mean negative
    log-likelihood of the given labels (no true label is involved). Returns the scale.
    """
    rng = check_random_state(random_state)
    rows = np.sort(rng.choice(labels.size, min(max_samples, labels.size), replace=False))
    subset, subset_labels = _take_rows(embeddings, rows), labels[rows]
    per_candidate = [plan_crossfit(subset_labels, rng, n_folds=n_folds, logit_scale=scale)
                     for scale in candidates]
    runs = train_heads(subset, [plan for plans in per_candidate for plan in plans],
                       n_classes=n_classes, **options)
    losses = []
    for position, plans in enumerate(per_candidate):
        dynamics = merge_folds(runs[position * n_folds:(position + 1) * n_folds], plans)
        given = dynamics.mean_probs[np.arange(rows.size), subset_labels]
        losses.append(-np.log(np.clip(given, 1e-12, 1.0)).mean())
    return float(candidates[int(np.argmin(losses))])


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device, *, small: bool = True):
    """Run work that is too ``small`` to split (e.g. the tiny per-step matrix products) on one
    CPU thread: on a busy machine more threads only wait on each other."""
    if device.type != "cpu" or not small:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _take_rows(embeddings, rows) -> np.ndarray:
    return embeddings.rows(rows) if isinstance(embeddings, FeatureRows) else embeddings[rows]


class _Inputs:
    """The heads' (N, D) float32 unit rows on ``device``: a tensor when they are in memory,
    else :class:`FeatureRows` converted a minibatch at a time."""

    def __init__(self, embeddings, device):
        if isinstance(embeddings, FeatureRows) and embeddings.dense is not None:
            embeddings = embeddings.dense
        self.lazy = embeddings if isinstance(embeddings, FeatureRows) else None
        self.tensor = None if self.lazy is not None else torch.as_tensor(
            embeddings, dtype=torch.float32).to(device)
        # on the CPU numpy's take gathers rows faster than index_select (0.21 / 0.35 ms for
        # 1000 random rows of 512)
        on_cpu = device.type == "cpu" and self.tensor is not None
        self.array = self.tensor.numpy() if on_cpu else None
        self.shape, self.device = tuple(embeddings.shape), device

    def take(self, index) -> torch.Tensor:
        """Rows at ``index`` (a slice or a 1-D int tensor) -> (n, D)."""
        if self.lazy is None:
            if isinstance(index, slice):
                return self.tensor[index]
            if self.array is not None:
                return torch.from_numpy(np.take(self.array, index.numpy(), axis=0))
            return self.tensor.index_select(0, index)
        if isinstance(index, slice):
            return torch.from_numpy(self.lazy.rows(index)).to(self.device)
        return torch.from_numpy(self.lazy.rows(index.cpu().numpy())).to(self.device)


def _train(embeddings, plans, class_embeddings, settings, device, on_epoch) -> list:
    inputs = _Inputs(embeddings, device)
    n_classes, n_epochs = settings["n_classes"], settings["n_epochs"]
    generators = [torch.Generator().manual_seed(plan.seed) for plan in plans]
    weight = torch.stack([initial_weights(n_classes, inputs.shape[1], class_embeddings, gen)
                          for gen in generators]).to(device)
    bias = torch.zeros(len(plans), n_classes, device=device)
    velocity = [torch.zeros_like(weight), torch.zeros_like(bias)]
    scales = torch.tensor([plan.logit_scale for plan in plans], device=device)
    targets = torch.as_tensor(np.stack([plan.labels for plan in plans]),
                              dtype=torch.long).to(device)
    members = np.zeros((len(plans), inputs.shape[0]), dtype=bool)
    for head, plan in enumerate(plans):
        members[head, plan.fit_rows] = True
    order = SharedOrder(np.flatnonzero(members.any(axis=0)), [plan.seed for plan in plans],
                        settings["batch_size"])
    members = torch.as_tensor(members).to(device)
    recorders = _recorders(plans, n_epochs, n_classes)
    for epoch in range(n_epochs):
        # the cosine schedule from lr down to 0 (torch's CosineAnnealingLR in closed form)
        lr = settings["lr"] * (1 + np.cos(np.pi * epoch / max(n_epochs, 1))) / 2
        for rows in order.epoch():
            rows = torch.as_tensor(rows).to(device)
            row_weights = members[:, rows].T / float(rows.numel())  # (B, H), 0 off fit_rows
            grads = compute_gradients(inputs.take(rows), targets[:, rows].T, row_weights, weight,
                               bias, scales)
            momentum_step((weight, bias), grads, velocity, lr)
        unit_weight = torch.nn.functional.normalize(weight, dim=2)
        for recorder in recorders:
            recorder.record(epoch, inputs, unit_weight, bias, scales)
        if on_epoch is not None:
            on_epoch()
    dynamics = {}
    for recorder in recorders:
        dynamics.update(recorder.dynamics())
    return [dynamics[head] for head in range(len(plans))]


def _recorders(plans, n_epochs: int, n_classes: int) -> list:
    """One :class:`_Recorder` per set of heads that record the same rows (the threshold runs
    all record every row; each fold its own)."""
    groups = []
    for head, plan in enumerate(plans):
        for group in groups:
            if np.array_equal(plans[group[0]].record_rows, plan.record_rows):
                group.append(head)
                break
        else:
            groups.append([head])
    return [_Recorder(group, plans, n_epochs, n_classes) for group in groups]


class _Recorder:
    """Per-epoch statistics of the heads ``heads`` (G of them), which record the same rows:
    one gather and one (R, D) @ (D, G*K) product serve them all."""

    def __init__(self, heads, plans, n_epochs: int, n_classes: int):
        record_rows = plans[heads[0]].record_rows
        every_row = np.array_equal(record_rows, np.arange(plans[heads[0]].labels.size))
        # all rows recorded (threshold runs): read them in place, without a gathered copy
        self.rows = None if every_row else torch.as_tensor(record_rows, dtype=torch.long)
        self.heads, self.n_rows, self.n_epochs = list(heads), record_rows.size, n_epochs
        self.labels = np.stack([plans[head].labels[record_rows] for head in heads])
        shape = (len(heads), n_epochs, record_rows.size)
        self.history = {name: np.empty(shape, np.float16)
                        for name in ("entropy", "margin", "given_prob")}
        self.agreement = np.empty(shape, dtype=bool)
        self.prob_sum = np.zeros((len(heads), record_rows.size, n_classes), np.float32)

    def record(self, epoch, inputs, unit_weight, bias, scales) -> None:
        """This epoch's statistics from all heads' ``unit_weight`` (H, K, D), ``bias`` (H, K)
        and ``scales`` (H,), ``BLOCK_ROWS // 8`` rows at a time: no (R, K) temporaries beyond
        one chunk's (a million rows at K = 100: 400 MB each)."""
        chunk = _features.BLOCK_ROWS // 8
        rows = None if self.rows is None else self.rows.to(inputs.device)
        heads = torch.as_tensor(self.heads, device=unit_weight.device)
        n_classes, dim = unit_weight.shape[1:]
        weight = unit_weight[heads].reshape(-1, dim).T
        scale, offset = scales[heads][:, None], bias[heads]
        for start in range(0, self.n_rows, chunk):
            stop = min(start + chunk, self.n_rows)
            batch = inputs.take(slice(start, stop) if rows is None else rows[start:stop])
            logits = ((batch @ weight).view(-1, len(self.heads), n_classes) * scale
                      + offset).cpu()
            for position in range(len(self.heads)):
                stats = compute_epoch_statistics(logits[:, position],
                                                 self.labels[position, start:stop])
                for name in self.history:
                    self.history[name][position, epoch, start:stop] = stats[name]
                self.agreement[position, epoch, start:stop] = stats["agrees"]
                self.prob_sum[position, start:stop] += stats["probs"]

    def dynamics(self) -> dict:
        """{head: :class:`TrainingDynamics`} of this recorder's heads."""
        mean_probs = np.divide(self.prob_sum, max(self.n_epochs, 1), out=self.prob_sum)
        return {head: TrainingDynamics(
            entropy_history=self.history["entropy"][position],
            agreement_history=self.agreement[position],
            margin_history=self.history["margin"][position],
            given_prob_history=self.history["given_prob"][position],
            mean_probs=mean_probs[position]) for position, head in enumerate(self.heads)}
