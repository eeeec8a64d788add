"""Cosine heads trained over frozen embeddings, recording per-epoch training dynamics.

Logits are ``logit_scale * e @ normalize(W).T + b`` on unit rows ``e``: the logit range stays
``2 * logit_scale`` for the whole run. When class text embeddings are given, ``W`` starts
from them (epoch 0 is the zero-shot classifier).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .._device import resolve_device
from .._validation import check_random_state
from .dynamics import compute_epoch_statistics

# rows on which the held-out temperature is chosen (a subsample above it)
SCALE_SELECTION_MAX_SAMPLES = 4000
LOGIT_SCALE_CANDIDATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


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


def _initial_weights(n_classes: int, dim: int, class_embeddings, generator) -> torch.Tensor:
    weights = torch.randn(n_classes, dim, generator=generator) * 0.01
    if class_embeddings is not None:
        given = torch.as_tensor(np.asarray(class_embeddings, dtype=np.float32))
        weights[: given.shape[0]] = given
    return weights


class _CosineHead(torch.nn.Module):
    def __init__(self, weights: torch.Tensor, logit_scale: float):
        super().__init__()
        self.weight = torch.nn.Parameter(weights.clone())
        self.bias = torch.nn.Parameter(torch.zeros(weights.shape[0]))
        self.logit_scale = logit_scale

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        weight = torch.nn.functional.normalize(self.weight, dim=1)
        return self.logit_scale * embeddings @ weight.T + self.bias


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
    rng = check_random_state(random_state)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    device = resolve_device(device)
    every_row = np.arange(labels.size)
    rows = {"fit": every_row if fit_rows is None else np.asarray(fit_rows),
            "record": every_row if record_rows is None else np.asarray(record_rows)}
    settings = dict(n_classes=n_classes, n_epochs=n_epochs, batch_size=batch_size, lr=lr,
                    logit_scale=logit_scale)
    with _single_thread_on_cpu(device):
        return _train(embeddings, labels, rows, class_embeddings, settings, device, generator)


def train_crossfit_head(embeddings: np.ndarray, labels: np.ndarray, *, n_folds: int = 5,
                        train_mask: np.ndarray | None = None, random_state=None,
                        **options) -> TrainingDynamics:
    """Held-out training dynamics: every sample is recorded by heads that never saw it.

    The rows are split into ``n_folds`` random folds; for each fold a head is trained on the
    others (see :func:`train_head` for ``options``) and the fold's trajectories are kept.
    ``train_mask`` : (N,) bool or None; rows where it is False are never trained on, only
    recorded (e.g. the suspects of a first round, left out of a second, pruned one); a fold
    left with no trainable rows (only on tiny sets) keeps its head's initial weights.
    Returns dynamics for all N rows, each from the head of its own fold.
    """
    rng = check_random_state(random_state)
    folds = rng.permutation(labels.size) % n_folds
    trainable = (np.ones(labels.size, dtype=bool) if train_mask is None
                 else np.asarray(train_mask, dtype=bool))
    if trainable.shape != labels.shape:
        raise ValueError(f"train_mask must have shape {labels.shape}; got {trainable.shape}")
    merged = None
    for fold in range(n_folds):
        held_out = np.flatnonzero(folds == fold)
        run = train_head(embeddings, labels, fit_rows=np.flatnonzero((folds != fold) & trainable),
                         record_rows=held_out, random_state=rng, **options)
        merged = merged or _empty_dynamics(run, labels.size)
        for name in _HISTORIES:
            getattr(merged, name)[:, held_out] = getattr(run, name)
        merged.mean_probs[held_out] = run.mean_probs
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
                       random_state=None, **options) -> float:
    """The temperature whose held-out probabilities best predict the *given* labels.

    Cross-fitted heads at each candidate ``logit_scale`` on at most ``max_samples`` rows;
    the winner has the lowest mean negative log-likelihood of the given labels (no true
    label is involved). Returns the chosen scale.
    """
    rng = check_random_state(random_state)
    rows = np.sort(rng.choice(labels.size, min(max_samples, labels.size), replace=False))
    subset, subset_labels = embeddings[rows], labels[rows]
    losses = []
    for scale in candidates:
        dynamics = train_crossfit_head(subset, subset_labels, n_classes=n_classes,
                                       logit_scale=scale, random_state=rng, **options)
        given = dynamics.mean_probs[np.arange(rows.size), subset_labels]
        losses.append(-np.log(np.clip(given, 1e-12, 1.0)).mean())
    return float(candidates[int(np.argmin(losses))])


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Run the tiny per-step matrix products on one CPU thread (too small to split)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(embeddings, labels, rows, class_embeddings, settings, device,
           generator) -> TrainingDynamics:
    inputs = torch.as_tensor(embeddings, dtype=torch.float32).to(device)
    targets = torch.as_tensor(labels, dtype=torch.long).to(device)
    fit_index = torch.as_tensor(rows["fit"], dtype=torch.long).to(device)
    recorded = inputs[torch.as_tensor(rows["record"], dtype=torch.long).to(device)]
    recorded_labels = labels[rows["record"]]
    n_classes, n_epochs = settings["n_classes"], settings["n_epochs"]
    head = _CosineHead(_initial_weights(n_classes, inputs.shape[1], class_embeddings, generator),
                       settings["logit_scale"]).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=settings["lr"], momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_epochs, 1))
    n_samples = recorded.shape[0]
    history = {name: np.empty((n_epochs, n_samples), dtype=np.float16)
               for name in ("entropy", "margin", "given_prob")}
    agreement = np.empty((n_epochs, n_samples), dtype=bool)
    prob_sum = np.zeros((n_samples, n_classes), dtype=np.float64)
    for epoch in range(n_epochs):
        head.train()
        order = fit_index[torch.randperm(fit_index.numel(), generator=generator).to(device)]
        for start in range(0, order.numel(), settings["batch_size"]):
            batch = order[start:start + settings["batch_size"]]
            loss = torch.nn.functional.cross_entropy(head(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if fit_index.numel():  # no rows to fit (a tiny fold): the head keeps its start
            schedule.step()
        logits = _predict_logits(head, recorded, batch_size=8192)
        stats = compute_epoch_statistics(logits, recorded_labels)
        for name in history:
            history[name][epoch] = stats[name]
        agreement[epoch] = stats["agrees"]
        prob_sum += stats["probs"]
    return TrainingDynamics(
        entropy_history=history["entropy"], agreement_history=agreement,
        margin_history=history["margin"], given_prob_history=history["given_prob"],
        mean_probs=(prob_sum / max(n_epochs, 1)).astype(np.float32),
    )


@torch.inference_mode()
def _predict_logits(head: torch.nn.Module, inputs: torch.Tensor, *, batch_size: int) -> np.ndarray:
    head.eval()
    parts = [head(inputs[start:start + batch_size]).float().cpu()
             for start in range(0, inputs.shape[0], batch_size)]
    return torch.cat(parts).numpy()
