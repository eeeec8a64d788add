"""One optimisation step of H cosine heads stacked together: initial weights, the shared
minibatch order, closed-form gradients and the momentum update.

:mod:`clipsei.engine.heads` runs the training loop over these; the heads' weights are
``weight`` (H, K, D) and ``bias`` (H, K), their inverse temperatures ``scales`` (H,).
"""

from __future__ import annotations

import numpy as np
import torch


def initial_weights(n_classes: int, dim: int, class_embeddings, generator) -> torch.Tensor:
    """One head's (K, D) float32 starting weights: small normal draws from ``generator``, the
    first K' rows replaced by ``class_embeddings`` (K', D) when given."""
    weights = torch.randn(n_classes, dim, generator=generator) * 0.01
    if class_embeddings is not None:
        given = torch.as_tensor(np.asarray(class_embeddings, dtype=np.float32))
        weights[: given.shape[0]] = given
    return weights


class SharedOrder:
    """One minibatch order per epoch over ``rows`` (the union of the heads' ``fit_rows``),
    drawn from a generator seeded by all the heads' ``seeds``; each minibatch's row ids sorted
    (the gradient is a sum over the rows, and sorted ids read a memory map in order)."""

    def __init__(self, rows: np.ndarray, seeds, batch_size: int):
        seed = np.random.SeedSequence(list(seeds)).generate_state(2)
        self.generator = torch.Generator().manual_seed(int(seed[0]) << 31 ^ int(seed[1]))
        self.rows, self.batch_size = rows, batch_size

    def epoch(self):
        """Yield each step's (B,) int64 row ids (the last step may be shorter)."""
        order = self.rows[torch.randperm(self.rows.size, generator=self.generator).numpy()]
        for start in range(0, order.size, self.batch_size):
            yield np.sort(order[start:start + self.batch_size])


def compute_gradients(batch_inputs, batch_targets, row_weights, weight, bias, scales):
    """Gradients of ``sum_h sum_i row_weights[i, h] * cross_entropy`` with respect to the
    stacked ``weight`` (H, K, D) and ``bias`` (H, K) of cosine heads, in closed form, for one
    shared minibatch: ``batch_inputs`` (B, D), ``batch_targets`` and ``row_weights`` (B, H).
    One (B, D) @ (D, H*K) product serves all heads; a row of weight 0 adds exactly 0."""
    n_heads, n_classes, dim = weight.shape
    norms = weight.norm(dim=2, keepdim=True).clamp_min(1e-12)  # as F.normalize's eps
    unit = weight / norms
    logits = (batch_inputs @ unit.reshape(-1, dim).T).view(-1, n_heads, n_classes)
    residual = _softmax(logits * scales[:, None] + bias)
    residual.scatter_add_(2, batch_targets[..., None],
                          -torch.ones_like(batch_targets[..., None], dtype=residual.dtype))
    residual *= row_weights[..., None]
    unit_grad = (residual.view(-1, n_heads * n_classes).T @ batch_inputs).view(weight.shape)
    unit_grad *= scales[:, None, None]
    weight_grad = (unit_grad - unit * (unit_grad * unit).sum(dim=2, keepdim=True)) / norms
    return weight_grad, residual.sum(dim=0)


def _softmax(logits):
    """Softmax over the last axis. Below 64 classes it is computed by hand, in place on
    ``logits`` (faster than torch's kernel for few classes); otherwise a new tensor."""
    if logits.shape[-1] >= 64:
        return torch.softmax(logits, dim=-1)
    logits = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))


def momentum_step(params, grads, velocity, lr: float) -> None:
    """SGD with momentum 0.9 (as ``torch.optim.SGD``) for every head."""
    for param, grad, buffer in zip(params, grads, velocity):
        buffer.mul_(0.9).add_(grad)
        param.sub_(lr * buffer)
