"""A prompt-tuned head (CoOp, Zhou et al. 2022) over cached image embeddings.

Each class prompt is ``[start] ctx_1 .. ctx_M <class name tokens> . [end]``: the M context
vectors are learnt, the class name's token embeddings are fixed, and the whole sequence goes
through the model's FROZEN text encoder (positional embeddings, transformer, final layer
norm, pooling at the end token, projection). Logits are
``logit_scale * cos(image embedding, prompt text embedding)``; only the context vectors are
trained, with cross-entropy over cached image embeddings (no image encoder runs). The extra
"other" class of threshold samples is one more prompt, the prompt set's ``other_class``
wording. Every epoch's image-text softmax is recorded like the linear head's
(:class:`clipsei.engine.heads.TrainingDynamics`). The module itself is in
:mod:`clipsei.engine.prompt_model`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import check_embeddings, check_labels, check_random_state
from .dynamics import compute_epoch_statistics
from .heads import TrainingDynamics, single_thread_on_cpu
from .prompt_model import PromptHead as PromptHead
from .threshold import ThresholdRunScores, combine_threshold_runs

MAX_STEPS_PER_EPOCH = 20  # default batches: every text-encoder pass sees >= N / 20 images
SMALL_TEXT_PASS = 10**8  # tokens x transformer weights of a text pass run on one CPU thread


@dataclass(frozen=True)
class PromptHeadRun:
    """What one prompt-head training run gives.

    dynamics : the recorded (E, R) histories and (R, P) mean softmax, P = number of prompts.
    loss_history : (E,) float64, mean training cross-entropy of each epoch.
    text_embeddings : (P, D) float32 unit rows, the learnt prompts' text embeddings.
    context : (M, W) or, class-specific, (P, M, W) float32, the learnt context vectors.
    """

    dynamics: TrainingDynamics
    loss_history: np.ndarray
    text_embeddings: np.ndarray
    context: np.ndarray


def _threads_for(head: PromptHead):
    """One CPU thread when a text pass is too small to split (e.g. the tiny test model)."""
    n_tokens = head.prefix.shape[0] * (1 + head.context.shape[-2] + head.suffix.shape[1])
    work = n_tokens * sum(p.numel() for p in head._tower.transformer.parameters())
    return single_thread_on_cpu(head.context.device, small=work < SMALL_TEXT_PASS)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """Eval mode and no gradients for ``model``'s weights; both restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(training)
def train_prompt_head(embeddings, labels, text_model, class_names, *, other_class=None,
                      n_ctx: int = 4, ctx_init: str | None = None, class_specific: bool = False,
                      n_epochs: int = 10, batch_size: int | None = None, lr: float = 2e-3,
                      logit_scale: float | None = None, fit_rows=None, record_rows=None,
                      recorder=None, random_state=None) -> PromptHeadRun:
    """Train the context vectors of a :class:`PromptHead` and record every epoch.

    Parameters
    ----------
    embeddings : (N, D) image embeddings of ``text_model`` (rows are L2-normalised here).
    labels : (N,) ints in [0, P): class ``k < K`` is ``class_names[k]``, class ``K`` the
        ``other_class`` wording when given (P = K + 1), e.g. threshold samples.
    text_model : a :class:`clipsei.images.embed.ClipModel`; its weights stay untouched and
        the head runs on its device.
    n_ctx, ctx_init, class_specific : M context vectors, started from the token embeddings
        of ``ctx_init`` (M words, e.g. "a photo of a") or at random; shared by all prompts or
        one set per prompt.
    n_epochs, batch_size, lr : Adam on the context, cosine-decayed from ``lr`` to 0; batch
        None -> at most ``MAX_STEPS_PER_EPOCH`` steps an epoch (one text pass per step).
    logit_scale : None -> the model's own (at most 100).
    fit_rows, record_rows : indices trained on / recorded (None: all rows); histories are
        (E, R) over ``record_rows``.
    recorder : an optional :class:`clipsei.engine.dynamics.SEIRecorder` given each epoch's
        recorded logits (sample ids = row indices).
    random_state : None, int or numpy Generator (context start and minibatch order).
    """
    x = check_embeddings(embeddings)
    prompt_names = _prompt_names(class_names, other_class)
    y = check_labels(labels, n_samples=x.shape[0], n_classes=len(prompt_names))
    _check_options(text_model, x, n_ctx=n_ctx, n_epochs=n_epochs, batch_size=batch_size, lr=lr)
    rng = check_random_state(random_state)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    every_row = np.arange(y.size)
    rows = (every_row if fit_rows is None else np.asarray(fit_rows, dtype=np.int64),
            every_row if record_rows is None else np.asarray(record_rows, dtype=np.int64))
    with _frozen(text_model.model):
        head = PromptHead(text_model, prompt_names, n_ctx=n_ctx, ctx_init=ctx_init,
                          class_specific=class_specific, logit_scale=logit_scale,
                          generator=generator)
        with _threads_for(head):
            return _train(head, x, y, rows, dict(n_epochs=n_epochs, batch_size=batch_size, lr=lr),
                          generator, recorder)


def run_prompt_threshold_samples(x, labels, text_model, class_names, *, other_class: str,
                                 slices, rng, **options) -> ThresholdRunScores:
    """One prompt head per threshold slice, its rows relabelled to the ``other_class`` prompt
    (class K), combined as :func:`clipsei.engine.threshold.combine_threshold_runs` does.

    x : (N, D) image embeddings; labels : (N,) ints in [0, K), K = len(class_names);
    ``options`` go to :func:`train_prompt_head`.
    """
    runs = []
    for slice_ in slices:
        run_labels = np.array(labels, copy=True)
        run_labels[slice_] = len(class_names)  # threshold samples join the "other" prompt
        runs.append(train_prompt_head(x, run_labels, text_model, class_names,
                                      other_class=other_class, random_state=rng,
                                      **options).dynamics)
    return combine_threshold_runs(runs, slices, n_classes=len(class_names))


# the estimator's ``lr`` (a linear head's SGD rate, 0.1) times this is the prompt head's Adam
# rate: 0.1 -> 0.002, CoOp's learning rate
PROMPT_LR_RATIO = 0.02


@dataclass(frozen=True)
class PromptTask:
    """What :class:`clipsei.LabelIssueDetector`'s ``"sei_prompt"`` method needs.

    embeddings : (N, D) float32 unit rows; class_names : K' names of the present classes;
    other_class : the prompt set's "other" wording (the threshold samples' class).
    """

    embeddings: np.ndarray
    text_model: object
    class_names: tuple
    other_class: str

    def run_threshold_samples(self, labels, *, slices, rng, n_epochs: int, batch_size, lr: float,
                              logit_scale) -> ThresholdRunScores:
        """Threshold-sample runs of prompt heads for compact ``labels`` (N,) in [0, K');
        ``lr`` is the estimator's (scaled by :data:`PROMPT_LR_RATIO`)."""
        return run_prompt_threshold_samples(
            self.embeddings, labels, self.text_model, self.class_names,
            other_class=self.other_class, slices=slices, rng=rng, n_epochs=n_epochs,
            batch_size=batch_size, lr=lr * PROMPT_LR_RATIO, logit_scale=logit_scale)


def prepare_prompt_task(embeddings, *, text_model, class_names, prompt_set, present
                        ) -> PromptTask:
    """Check the prompt head's inputs once: ``class_names`` (K,) for the original classes,
    ``present`` (K',) the ids of the classes with samples, ``prompt_set`` a name or file."""
    from ..images.prompts import load_prompt_set  # images -> engine: the prompt registry

    if text_model is None or class_names is None:
        raise ValueError("method 'sei_prompt' needs text_model= (a ClipModel) and "
                         "class_names= (one name per class) in fit()")
    names = _prompt_names(class_names, None)
    if len(names) <= int(np.max(present)):
        raise ValueError(f"class_names must name every class ({int(np.max(present)) + 1} or "
                         f"more); got {len(names)}")
    x = check_embeddings(embeddings)
    _check_options(text_model, x, n_ctx=1, n_epochs=1, batch_size=None, lr=1.0)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return PromptTask(embeddings=unit.astype(np.float32), text_model=text_model,
                      class_names=tuple(names[k] for k in present),
                      other_class=load_prompt_set(prompt_set).other_class)


def _prompt_names(class_names, other_class) -> list:
    """Class names (underscores -> spaces), then the "other" wording when given."""
    if isinstance(class_names, str) or not len(class_names):
        raise ValueError(f"class_names must be a non-empty list of strings; got {class_names!r}")
    names = [str(name).replace("_", " ") for name in class_names]
    return names + ([] if other_class is None else [str(other_class)])


def _check_options(text_model, x, *, n_ctx, n_epochs, batch_size, lr) -> None:
    if not all(hasattr(text_model, name) for name in ("model", "tokenizer", "device")):
        raise TypeError("text_model must be a ClipModel from load_clip_model; got "
                        f"{type(text_model).__name__}")
    dim = getattr(text_model, "embed_dim", x.shape[1])
    if x.shape[1] != dim:
        raise ValueError(f"embeddings must be (N, {dim}) to match the text model; "
                         f"got shape {x.shape}")
    for name, value in (("n_ctx", n_ctx), ("n_epochs", n_epochs)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None; got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")


class _Histories:
    """Per-epoch statistics of R recorded rows, kept as :class:`TrainingDynamics` wants."""

    def __init__(self, n_epochs: int, n_rows: int, n_classes: int):
        self.arrays = {name: np.empty((n_epochs, n_rows), np.float16)
                       for name in ("entropy", "margin", "given_prob")}
        self.agrees = np.empty((n_epochs, n_rows), dtype=bool)
        self.prob_sum = np.zeros((n_rows, n_classes))

    def add(self, epoch: int, logits: np.ndarray, labels: np.ndarray) -> None:
        stats = compute_epoch_statistics(logits, labels)
        for name, array in self.arrays.items():
            array[epoch] = stats[name]
        self.agrees[epoch] = stats["agrees"]
        self.prob_sum += stats["probs"]

    def dynamics(self) -> TrainingDynamics:
        n_epochs = self.agrees.shape[0]
        return TrainingDynamics(
            entropy_history=self.arrays["entropy"], agreement_history=self.agrees,
            margin_history=self.arrays["margin"], given_prob_history=self.arrays["given_prob"],
            mean_probs=(self.prob_sum / n_epochs).astype(np.float32))


def _train(head: PromptHead, x, y, rows, settings, generator, recorder) -> PromptHeadRun:
    fit_rows, record_rows = rows
    device = head.context.device
    inputs = torch.nn.functional.normalize(torch.as_tensor(x), dim=1).to(device)
    targets = torch.as_tensor(y, dtype=torch.long).to(device)
    recorded = inputs[torch.as_tensor(record_rows).to(device)]
    n_epochs = settings["n_epochs"]
    batch_size = settings["batch_size"] or max(32, -(-fit_rows.size // MAX_STEPS_PER_EPOCH))
    optimizer = torch.optim.Adam([head.context], lr=settings["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_epochs)
    histories = _Histories(n_epochs, record_rows.size, head.prefix.shape[0])
    losses = np.full(n_epochs, np.nan)
    for epoch in range(n_epochs):
        order = fit_rows[torch.randperm(fit_rows.size, generator=generator).numpy()]
        total = 0.0
        for start in range(0, order.size, batch_size):
            batch = torch.as_tensor(order[start:start + batch_size]).to(device)
            loss = torch.nn.functional.cross_entropy(head(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        if order.size:  # no rows to fit (a tiny fold): the context keeps its start
            losses[epoch] = total / order.size
            schedule.step()
        logits = _predict_logits(head, recorded)
        histories.add(epoch, logits, y[record_rows])
        if recorder is not None:
            recorder.update(logits, y[record_rows], record_rows)
    with torch.no_grad():
        text = head.encode_prompts().cpu().numpy()
    return PromptHeadRun(dynamics=histories.dynamics(), loss_history=losses,
                         text_embeddings=text.astype(np.float32),
                         context=head.context.detach().float().cpu().numpy())


@torch.no_grad()
def _predict_logits(head: PromptHead, inputs: torch.Tensor, *, batch_size: int = 8192):
    """(R, P) float32 logits of ``inputs`` (R, D) unit rows; the prompts are encoded once."""
    text = head.encode_prompts()
    parts = [head(inputs[start:start + batch_size], text).float().cpu()
             for start in range(0, inputs.shape[0], batch_size)]
    return torch.cat(parts).numpy()
