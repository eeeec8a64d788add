"""The text side of ``clipsei bench``: class text embeddings and, with a CLIP model, its text
tower, so that every engine method that uses text gets it.

A bench file's ``text_features`` (K, D) feed the default's zero-shot prior, the in-sample heads'
start and ``zero_shot``. The prompt-tuned head (``sei_prompt``) runs learnt prompts through a
text encoder, so it needs a CLIP model (:func:`load_bench_model`); without one it is reported
as not run, with the reason, instead of failing the bench.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROMPT_METHODS = ("sei_prompt",)  # engine methods that need a text encoder
NO_TEXT_MODEL = ("needs a CLIP text encoder to tune prompts through (clipsei bench --model "
                 "NAME --pretrained WEIGHTS); precomputed text_features cannot")


@dataclass(frozen=True)
class BenchText:
    """What the engine methods get of the text side.

    text_features : (K, D) class text embeddings or None; text_model : a ClipModel or None;
    class_names : K names (needed with a text model); other_embedding : (D,) the prompt set's
    "other" class text or None; prompt_set : its name; source : where text_features came
    from ("file", "prompts" encoded by the model, or "none").
    """

    text_features: np.ndarray | None = None
    text_model: object = None
    class_names: tuple | None = None
    other_embedding: np.ndarray | None = None
    prompt_set: str = "generic"
    source: str = "none"

    def fit_kwargs(self) -> dict:
        """Keyword arguments of :meth:`clipsei.LabelIssueDetector.fit` for the text side."""
        return {"class_embeddings": self.text_features, "other_embedding": self.other_embedding,
                "text_model": self.text_model, "class_names": self.class_names,
                "prompt_set": self.prompt_set}


def load_bench_model(name: str, pretrained, *, device: str = "auto"):
    """A ClipModel for the bench's text side (:func:`clipsei.images.embed.load_clip_model`)."""
    from ..images.embed import load_clip_model

    return load_clip_model(name, pretrained, device=device)


def resolve_bench_text(features, labels, *, text_features=None, text_model=None,
                       class_names=None, prompt_set: str = "generic") -> BenchText:
    """The text side for ``features`` (N, D) and ``labels`` (N,), both validated.

    With ``text_model`` the class prompts of ``prompt_set`` are encoded where no
    ``text_features`` are given (given ones are kept: they are what the file holds), and the
    "other" prompt too; ``class_names`` must then name every class and the model's embedding
    width must be D. Raises ``ValueError`` naming the mismatch.
    """
    if text_model is None:
        return BenchText(text_features=text_features,
                         source="none" if text_features is None else "file")
    from ..images.prompts import encode_class_prompts, encode_other_prompt

    dim = getattr(text_model, "embed_dim", None)
    if dim != features.shape[1]:
        raise ValueError(f"text_model {getattr(text_model, 'name', '')!r} embeds in {dim} "
                         f"dimensions but features are (N, {features.shape[1]}): bench the "
                         "features of the same model")
    n_classes = int(labels.max()) + 1
    if class_names is None or isinstance(class_names, str) or len(class_names) < n_classes:
        got = None if class_names is None else len(class_names)
        raise ValueError(f"class_names must name every class ({n_classes} or more) to build "
                         f"prompts for the text model; got {got}")
    names = tuple(str(name) for name in class_names)
    source = "file"
    if text_features is None:
        text_features, source = encode_class_prompts(names, text_model,
                                                     prompt_set=prompt_set), "prompts"
    return BenchText(text_features=text_features, text_model=text_model, class_names=names,
                     other_embedding=encode_other_prompt(text_model, prompt_set=prompt_set),
                     prompt_set=prompt_set, source=source)


def fit_engine_method(name: str, features, labels, *, seed: int, text: BenchText):
    """The issues table of engine method ``name`` on ``features`` (N, D) and ``labels`` (N,)
    with the text side ``text``. Trusts validated input."""
    from ..engine.detect import LabelIssueDetector

    detector = LabelIssueDetector(method=name, random_state=seed)
    return detector.fit(features, labels, **text.fit_kwargs()).issues_
