"""A light head trained over cached embeddings, recording per-epoch training dynamics.

The head's logits are ``logit_scale * normalize(e) @ normalize(W).T + b``: a cosine
classifier with a fixed temperature. Normalising the class weights keeps the logit range
at ``2 * logit_scale`` for the whole run, so the softmax entropy stays informative instead
of collapsing as an unnormalised ``W`` grows while the head memorises noisy labels (the
collapse that makes SEI on a plain linear head so sensitive to the scale). When class text
embeddings are given, ``W`` starts from them: epoch 0 is the zero-shot CLIP classifier.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ._validation import check_random_state
from .sei import compute_epoch_statistics


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
               class_embeddings: np.ndarray | None = None, n_epochs: int = 30,
               batch_size: int = 256, lr: float = 0.1, logit_scale: float = 10.0,
               weight_decay: float = 0.0, device="auto", random_state=None) -> TrainingDynamics:
    """Train a cosine head on L2-normalised ``embeddings`` and record every epoch.

    Parameters
    ----------
    embeddings : (N, D) float32, rows L2-normalised (the caller's job).
    labels : (N,) int64 in [0, n_classes), the given labels (threshold samples included).
    class_embeddings : (K', D) float32 or None, initial rows of ``W`` for classes
        ``0 .. K'-1`` (e.g. class-prompt text embeddings); other rows start small random.
    n_epochs, batch_size, lr, weight_decay : SGD (momentum 0.9) settings; the learning rate
        follows a cosine schedule from ``lr`` down to 0.
    logit_scale : inverse temperature of the cosine logits (logit range ``2*logit_scale``).
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
    random_state : None, int or numpy Generator; seeds init and minibatch order.
    """
    rng = check_random_state(random_state)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    device = resolve_device(device)
    with _single_thread_on_cpu(device):
        return _train(embeddings, labels, n_classes, class_embeddings, n_epochs, batch_size, lr,
                      logit_scale, weight_decay, device, generator)


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device):
    """Run the tiny per-step matrix products on one CPU thread.

    A (256 x D) @ (D x K) step is far too small to split: measured on 2 cores, two torch
    threads took 43 ms a step when the cores were busy against 0.8 ms on one thread.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(embeddings, labels, n_classes, class_embeddings, n_epochs, batch_size, lr,
           logit_scale, weight_decay, device, generator) -> TrainingDynamics:
    inputs = torch.as_tensor(embeddings, dtype=torch.float32).to(device)
    targets = torch.as_tensor(labels, dtype=torch.long).to(device)
    head = _CosineHead(_initial_weights(n_classes, inputs.shape[1], class_embeddings, generator),
                       logit_scale).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_epochs, 1))
    n_samples = inputs.shape[0]
    history = {name: np.empty((n_epochs, n_samples), dtype=np.float16)
               for name in ("entropy", "margin", "given_prob")}
    agreement = np.empty((n_epochs, n_samples), dtype=bool)
    prob_sum = np.zeros((n_samples, n_classes), dtype=np.float64)
    for epoch in range(n_epochs):
        head.train()
        order = torch.randperm(n_samples, generator=generator).to(device)
        for start in range(0, n_samples, batch_size):
            batch = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(head(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
        logits = _predict_logits(head, inputs, batch_size=8192)
        stats = compute_epoch_statistics(logits, labels)
        for name in history:
            history[name][epoch] = stats[name]
        agreement[epoch] = stats["agrees"]
        prob_sum += _softmax(logits)
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
