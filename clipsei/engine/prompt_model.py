"""The prompt-tuned head's module (CoOp, Zhou et al. 2022): learnt context vectors before each
class name's fixed token embeddings, through a CLIP model's FROZEN text tower (positional
embeddings, transformer, final layer norm, pooling at the end token, projection). Logits are
``logit_scale * cos(image embedding, prompt text embedding)``. Training lives in
:mod:`clipsei.engine.prompt_head`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_PLACEHOLDER = "X"  # one token in CLIP's BPE; its slots become the learnt context
_POOL_TYPES = ("argmax", "eos", "last", "first")


@dataclass(frozen=True)
class _TextTower:
    """The frozen modules of an open_clip text encoder (``CLIP`` or ``CustomTextCLIP``)."""

    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    ln_final: torch.nn.Module
    text_projection: object
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None

    @classmethod
    def of(cls, model: torch.nn.Module) -> "_TextTower":
        tower = getattr(model, "text", model)  # CustomTextCLIP keeps its tower in .text
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        if not all(hasattr(tower, name) for name in needed) or getattr(tower, "cls_emb", None) \
                is not None:
            raise ValueError("prompt tuning needs an open_clip text transformer with token "
                             f"embeddings; {type(tower).__name__} has none")
        pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        if pool_type not in _POOL_TYPES:
            raise ValueError(f"text pool type must be one of {list(_POOL_TYPES)}; "
                             f"got {pool_type!r}")
        return cls(tower.token_embedding, tower.positional_embedding, tower.transformer,
                   tower.ln_final, getattr(tower, "text_projection", None),
                   getattr(tower, "attn_mask", None), pool_type,
                   getattr(tower, "text_eos_id", getattr(tower, "eos_id", None)))

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P,) position of each prompt's pooled token in ``tokens`` (P, L)."""
        if self.pool_type == "argmax":  # the end token has the largest id
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        last = tokens.shape[1] - 1 if self.pool_type == "last" else 0
        return torch.full((tokens.shape[0],), last, dtype=torch.long)

    def kept_length(self, pool_index: torch.Tensor, length: int) -> int:
        """Tokens to run: with a causal mask nothing after the pooled token reaches it, so
        the padding after the last prompt's end token is cut (same output, less work)."""
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos"):
            return length
        return int(pool_index.max()) + 1

    def encode(self, token_embeddings: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        """(P, L, W) token embeddings -> (P, D) text embeddings (not normalised); L may be
        shorter than the context length (see :meth:`kept_length`)."""
        cast = getattr(self.transformer, "get_cast_dtype", lambda: torch.float32)()
        length = token_embeddings.shape[1]
        x = token_embeddings.to(cast) + self.positional_embedding[:length].to(cast)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]
        if isinstance(self.text_projection, torch.nn.Module):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection


class PromptHead(torch.nn.Module):
    """Learnable context vectors before fixed class-name tokens, scored by a frozen CLIP text
    encoder; ``forward(image_embeddings (B, D) unit rows) -> (B, P)`` logits.

    The text model's modules are held outside this module's parameters and state: only
    ``context`` ((M, W) shared, or (P, M, W) class-specific) is a parameter.
    """

    def __init__(self, text_model, prompt_names, *, n_ctx: int = 4, ctx_init: str | None = None,
                 class_specific: bool = False, logit_scale: float | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self._tower = _TextTower.of(text_model.model)  # a dataclass: not registered as modules
        device = text_model.device
        tokens = text_model.tokenizer(
            [" ".join([_PLACEHOLDER] * n_ctx + [name]) + "." for name in prompt_names]).to(device)
        _check_context_slots(text_model.tokenizer, tokens, n_ctx)
        with torch.no_grad():
            embedded = self._tower.token_embedding(tokens).float()
        pool_index = self._tower.pool_index(tokens).to(device)
        length = self._tower.kept_length(pool_index, tokens.shape[1])
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + n_ctx:length].clone(), persistent=False)
        self.register_buffer("pool_index", pool_index, persistent=False)
        start = _initial_context(text_model, self._tower, n_ctx, ctx_init, embedded.shape[-1],
                                 generator)
        if class_specific:
            start = start.unsqueeze(0).repeat(len(prompt_names), 1, 1)
        self.context = torch.nn.Parameter(start.to(device))
        scale = float(text_model.model.logit_scale.exp()) if logit_scale is None else logit_scale
        self.logit_scale = min(scale, 100.0)  # CLIP clamps its learnt scale at 100

    def encode_prompts(self) -> torch.Tensor:
        """(P, D) unit text embeddings of the prompts with the current context."""
        context = self.context
        if context.dim() == 2:
            context = context.unsqueeze(0).expand(self.prefix.shape[0], -1, -1)
        sequence = torch.cat([self.prefix, context, self.suffix], dim=1)
        text = self._tower.encode(sequence, self.pool_index)
        return torch.nn.functional.normalize(text.float(), dim=-1)

    def forward(self, image_embeddings: torch.Tensor, text: torch.Tensor | None = None):
        """(B, D) unit image rows -> (B, P) logits; ``text`` (P, D) reuses encoded prompts."""
        text = self.encode_prompts() if text is None else text
        return self.logit_scale * image_embeddings @ text.T


def _check_context_slots(tokenizer, tokens: torch.Tensor, n_ctx: int) -> None:
    """Fail unless positions 1..n_ctx of every prompt hold the placeholder token."""
    placeholder = tokenizer([_PLACEHOLDER])[0, 1].item()
    if not bool((tokens[:, 1:1 + n_ctx] == placeholder).all()):
        raise ValueError("prompt tuning needs a CLIP-style tokenizer (a start token, then one "
                         "token per placeholder word); this model's tokenizer is not")


def _initial_context(text_model, tower: _TextTower, n_ctx: int, ctx_init, width: int,
                     generator) -> torch.Tensor:
    """(M, W) starting context on the CPU: the token embeddings of ``ctx_init``, or
    N(0, 0.02^2) draws (CoOp's random start)."""
    if ctx_init is None:
        return torch.randn(n_ctx, width, generator=generator) * 0.02
    tokens = text_model.tokenizer([ctx_init]).to(text_model.device)
    n_words = int(tokens.argmax(dim=-1)[0]) - 1  # tokens between the start and end tokens
    if n_words != n_ctx:
        raise ValueError(f"ctx_init {ctx_init!r} has {n_words} tokens; it must have n_ctx = "
                         f"{n_ctx}")
    with torch.no_grad():
        return tower.token_embedding(tokens)[0, 1:1 + n_ctx].float().cpu()
