"""Re-scans from the cache alone: a model stand-in that needs no weights.

When every image and prompt of a scan is already in the embedding cache, the model's weights
are not needed. The cache folders' ``meta.json`` hold every field of the cache key (model
name, weights id, preprocessing, tokenizer context length), so a folder matching the
requested model is found before anything is loaded; the stand-in it yields keys the cache
exactly as the loaded model would, and refuses to encode.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import open_clip

from .._device import resolve_device
from .cache import CACHE_FORMAT, EmbeddingCache, text_key
from .decode import split_preprocess
from .decode_device import use_device_decode
from .embed import ClipModel, _image_cache_fields, _item_keys
from .prompts import load_prompt_set
from .weights import resolve_weights

logger = logging.getLogger(__name__)


class _WeightsNotLoaded:
    """In place of the network and tokenizer of a model served from the cache alone."""

    def __init__(self, context_length=None):
        self.context_length = context_length

    def __getattr__(self, name):
        raise RuntimeError("the model's weights were not loaded (every embedding was cached); "
                           "load it with load_clip_model to encode new images")

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")


def weights_loaded(model: ClipModel) -> bool:
    """False for the stand-in of :func:`find_cached_model`, True for a loaded model."""
    return not isinstance(model.model, _WeightsNotLoaded)


def find_cached_model(name: str, pretrained, *, cache_dir, table, class_names,
                      prompt_set: str = "generic", intensity: str = "none",
                      device="auto", decode: str = "cpu") -> ClipModel | None:
    """A :class:`ClipModel` stand-in without weights, when the cache under ``cache_dir`` holds
    every readable image of ``table`` and every prompt text of ``class_names`` (and of the
    set's "other" class) for model ``name``/``pretrained``; else None (load the model).

    Reads only ``meta.json`` files and cache chunks; never open_clip's weights.
    """
    if cache_dir is None or not Path(cache_dir).is_dir():
        return None
    _, weights_id = resolve_weights(name, pretrained)
    image_keys = [key for key in _item_keys(table)[0] if key is not None]
    prompts = load_prompt_set(prompt_set)
    texts = [text for label in [*class_names, prompts.other_class]
             for text in prompts.format(str(label).replace("_", " "))]
    for image_fields, text_fields in _matching_folders(Path(cache_dir), name, weights_id):
        model = _stand_in(name, pretrained, image_fields, text_fields, device)
        if model is None:
            continue
        draft = None if use_device_decode(decode, model.device, model.preprocess) else (
            split_preprocess(model.preprocess).draft_size)  # as embed_images keys it
        if _image_cache_fields(model, draft, intensity) != image_fields:
            continue
        dims = {_cached_dim(cache_dir, model.cache_fields("text"), [text_key(t) for t in texts]),
                _cached_dim(cache_dir, image_fields, image_keys)}
        if len(dims) == 1 and None not in dims:
            logger.info("every embedding is cached: the model is not loaded")
            return replace(model, embed_dim=dims.pop())
    return None


def _matching_folders(cache_dir: Path, name: str, weights_id: str):
    """(image fields, text fields) of the same model and weights, as meta.json stores them."""
    found = {"image": [], "text": []}
    for meta in sorted(cache_dir.glob("*/meta.json")):
        try:
            fields = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        same_weights = (fields.get("weights_id") == weights_id
                        or (weights_id.endswith(":")
                            and str(fields.get("weights_id", "")).startswith(weights_id)))
        if (fields.get("name") == name and same_weights
                and fields.get("open_clip") == open_clip.__version__
                and fields.get("cache_format") == CACHE_FORMAT and fields.get("kind") in found):
            fields.pop("cache_format")
            found[fields["kind"]].append(fields)
    return [(image, text) for image in found["image"] for text in found["text"]
            if image["weights_id"] == text["weights_id"]]


def _stand_in(name, pretrained, image_fields, text_fields, device) -> ClipModel | None:
    try:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        preprocess = image_transform_v2(PreprocessCfg(**image_fields["preprocess"]),
                                        is_train=False)
    except (KeyError, TypeError, ValueError):
        return None
    model = ClipModel(model=_WeightsNotLoaded(), preprocess=preprocess,
                      tokenizer=_WeightsNotLoaded(text_fields.get("context_length")),
                      device=resolve_device(device), name=name, pretrained=str(pretrained),
                      weights_id=image_fields["weights_id"], embed_dim=0,
                      preprocess_cfg=image_fields["preprocess"])
    return model


def _cached_dim(cache_dir, fields: dict, keys) -> int | None:
    """D of the cached rows when every key in ``keys`` is cached under ``fields``, else None."""
    found, rows = EmbeddingCache(cache_dir, fields).lookup(keys)
    return int(rows.shape[1]) if keys and found.all() else None
