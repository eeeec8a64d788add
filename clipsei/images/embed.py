"""open_clip models in, float32 L2-normalised embeddings out.

``load_clip_model`` resolves a model name (built-in, ``hf-hub:org/repo``, ``local-dir:/path`` or
the shipped ``clipsei-tiny``) and weights (a pretrained tag, a local checkpoint file, or ``"none"``
for random weights). ``embed_images`` decodes images in DataLoader workers while the model runs,
skips every image the cache already holds and writes new embeddings to it as it goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch
from tqdm.auto import tqdm

from .._device import resolve_device
from .cache import (EmbeddingCache, array_key, file_key, from_stored, hash_bytes,
                    sigterm_as_interrupt, to_stored)
from .content_hash import update_old_hashes
from .data import ImageTable, load_image_table
from .folders import printable
from .decode import ImageDataset, collate_images, split_preprocess
from .decode_device import (JpegBytesDataset, collate_jpeg_bytes, decode_batches,
                            tensor_preprocess, use_device_decode)
from .intensity import check_intensity
from .properties import PROPERTY_NAMES, properties_frame
from .weights import resolve_weights, check_weights_available, hash_weights

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)  # makes "clipsei-tiny" a model name


@dataclass
class ClipModel:
    """A loaded open_clip model with what is needed to encode and to key a cache.

    weights_id: the pretrained tag, ``sha256:<hex>`` of a checkpoint file, ``hf-hub:<id>``, or
        ``random:<hex>`` / ``local-dir:<hex>`` (hash of the loaded weights).
    embed_dim: D, the length of one embedding.
    """

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    device: torch.device
    name: str
    pretrained: str
    weights_id: str
    embed_dim: int
    preprocess_cfg: dict = field(default_factory=dict)

    def cache_fields(self, kind: str) -> dict:
        """What makes two embeddings of ``kind`` ("image" or "text") interchangeable."""
        fields = {"name": self.name, "weights_id": self.weights_id, "kind": kind,
                  "open_clip": open_clip.__version__}
        if kind == "image":
            fields["preprocess"] = self.preprocess_cfg
        else:
            fields["context_length"] = getattr(self.tokenizer, "context_length", None)
        return fields


@dataclass
class EmbeddingResult:
    """Embeddings of the M rows of ``table`` that decoded.

    embeddings: (M, D) float32, unit L2 norm. indices: (M,) int64 rows of ``table``.
    failures: DataFrame (index, path, reason), one row per image that could not be embedded.
    n_cached / n_encoded: how many of the M came from the cache / went through the model.
    content_hashes: (M,) content hash of each file, equal for equal pixels whatever the
        metadata (:mod:`clipsei.images.content_hash`), or of an array image's pixels; "" where
        a file cached before cannot be read now. properties: DataFrame (M rows, columns
        :data:`clipsei.images.properties.PROPERTY_NAMES`) of statistics taken while decoding;
        NaN for rows that were not decoded this time and whose cache entry has none.
    """

    embeddings: np.ndarray
    indices: np.ndarray
    failures: pd.DataFrame
    table: ImageTable
    n_cached: int = 0
    n_encoded: int = 0
    content_hashes: list | None = None
    properties: pd.DataFrame | None = None

    @property
    def labels(self) -> np.ndarray:
        """(M,) int64 labels of the embedded rows."""
        return self.table.labels[self.indices]


# --- models ----------------------------------------------------------------------------------


def load_clip_model(name: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", *,
                    device: str = "auto", cache_dir=None) -> ClipModel:
    """Load an open_clip model in eval mode on ``device`` ("auto", "cpu", "cuda", "cuda:1"...).

    pretrained: a tag (see ``open_clip.list_pretrained_tags_by_model(name)``), a checkpoint file
        (safetensors, or a torch file read with ``weights_only=True``), or "none" for random
        weights (with a loud warning). Ignored for ``hf-hub:`` and ``local-dir:`` names.
    cache_dir: where open_clip keeps downloaded weights.
    """
    device = resolve_device(device)
    create_kwargs, weights_id = resolve_weights(name, pretrained)
    if weights_id == pretrained or weights_id.startswith("hf-hub:"):  # open_clip downloads them
        check_weights_available(name, pretrained, cache_dir=cache_dir)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are the same on every load
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, device=device, cache_dir=cache_dir, weights_only=True, **create_kwargs)
    except Exception as err:  # noqa: BLE001 - a checkpoint file can fail in many ways
        raise _load_error(name, pretrained, weights_id, err) from err
    model.eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if weights_id.endswith(":"):  # random or local-dir weights: key them by their values
        weights_id += hash_weights(model)[:16]
    return ClipModel(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name),
                     device=device, name=name, pretrained=str(pretrained), weights_id=weights_id,
                     embed_dim=_embed_dim(model, device),
                     preprocess_cfg=dict(model.visual.preprocess_cfg))


def _load_error(name: str, pretrained, weights_id: str, err: Exception) -> Exception:
    """A one-line error for open_clip's failure to build ``name`` with ``pretrained``."""
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if not weights_id.startswith("sha256:"):
        if not isinstance(err, RuntimeError):
            return err
        return RuntimeError(f"could not load model {name!r} with weights {pretrained!r}: "
                            f"{first_line}")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, AssertionError) or (isinstance(err, RuntimeError) and "state_dict" in
                                           str(err)):  # read, but shaped for another model
        detail = lines[1] if len(lines) > 1 else first_line
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        return ValueError(f"checkpoint {pretrained} does not fit model {name} ({detail}); "
                          "pass the model it was saved from with --model")
    return ValueError(f"cannot read checkpoint file {pretrained} ({type(err).__name__}: "
                      f"{first_line}); is it a complete torch or safetensors file?")


def _embed_dim(model: torch.nn.Module, device: torch.device) -> int:
    output_dim = getattr(model.visual, "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    size = model.visual.preprocess_cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    with torch.inference_mode():
        return int(model.encode_image(torch.zeros(1, 3, *size, device=device)).shape[-1])


# --- encoding --------------------------------------------------------------------------------


def encode_texts(texts, model: ClipModel, *, batch_size: int = 256) -> np.ndarray:
    """Encode N strings -> (N, D) float32, unit L2 norm."""
    texts = [str(t) for t in texts]
    chunks = []
    with torch.inference_mode(), _autocast(model.device):
        for start in range(0, len(texts), batch_size):
            tokens = model.tokenizer(texts[start:start + batch_size]).to(model.device)
            chunks.append(_normalise(model.model.encode_text(tokens)))
    return np.concatenate(chunks) if chunks else np.zeros((0, model.embed_dim), np.float32)


def _encode_image_batch(batch: torch.Tensor, model: ClipModel) -> np.ndarray:
    """(B, 3, H, W) images -> (B, D) float32, unit L2 norm.

    ``batch`` is either fully preprocessed (float) or resized and cropped uint8 pixels, which
    are scaled and normalised here, on the model's device, as the preprocess's own
    ``ToTensor`` and ``Normalize`` would (a quarter of the bytes to copy to a GPU).
    """
    with torch.inference_mode(), _autocast(model.device):
        batch = batch.to(model.device, non_blocking=True)
        if batch.dtype == torch.uint8:
            plan = split_preprocess(model.preprocess)
            mean = torch.as_tensor(plan.mean, dtype=torch.float32, device=model.device)
            std = torch.as_tensor(plan.std, dtype=torch.float32, device=model.device)
            batch = batch.float().div_(255).sub_(mean[:, None, None]).div_(std[:, None, None])
        if model.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return _normalise(model.model.encode_image(batch))


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy()


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# --- images ----------------------------------------------------------------------------------


def embed_images(table_or_source, model: ClipModel, *, cache_dir=None, batch_size: int = 64,
                 num_workers: int | None = None, progress: bool = True,
                 flush_every: int = 1024, flush_seconds: float = 30.0, jpeg_draft: bool = True,
                 intensity: str = "none", properties: bool = True, engine: str = "local",
                 ray_address: str | None = None, decode: str = "cpu") -> EmbeddingResult:
    """Embed every image of an ``ImageTable`` (or of a source ``load_image_table`` accepts).

    Every returned row goes through float16 (what the cache stores) and back to unit norm, so
    runs with and without a cache, and resumed runs, return the same numbers. Images the cache
    already holds are not decoded again; new embeddings are written to it in chunks every
    ``flush_every`` rows or ``flush_seconds`` seconds, and on any exit (Ctrl-C and SIGTERM
    included). Images that cannot be read land in ``failures``.
    num_workers: DataLoader decoding processes; None picks a number for the device (local
        engine only).
    jpeg_draft: decode JPEG files at least twice the model's input size at a reduced DCT
        scale (see :func:`clipsei.images.data.decode_image_bytes`), several times faster for large
        photos; False decodes every file at full size, exactly as open_clip's preprocess
        does. The choice is part of the cache's key.
    intensity: "none", or "window" to stretch each image's 1st-99th percentile of pixel
        values to 0-255 before the preprocess (for images that use few grey levels, such as
        medical exports stored as 0-2; see :func:`clipsei.images.intensity.window_intensity`).
        Part of the cache's key.
    properties: take cheap image statistics (brightness, contrast, sharpness...; see
        :mod:`clipsei.images.properties`) of each image as it is decoded; they are cached
        with its embedding.
    engine: "local" (DataLoader workers and this process's model) or "ray" (Ray Data decodes
        on the cluster's CPUs and encodes on actors with one model each; see
        :mod:`clipsei.images.embed_ray`); the cache, results and failures are the same.
    ray_address: the Ray cluster to join with ``engine="ray"`` (None: the current connection,
        else ``RAY_ADDRESS``, a cluster ``ray start`` began here, or a new local instance).
    decode: "cpu" decodes and resizes every image with PIL in the DataLoader workers;
        "device" decodes JPEGs in batches on the model's device (nvJPEG on CUDA) and resizes
        them there (:mod:`clipsei.images.decode_device`; other files still take the PIL
        path); "auto" is "device" on CUDA, else "cpu". "cpu" is the default until the CUDA
        path is measured (benchmarks/gpu_check.sh). The device path decodes every file at
        full size (``jpeg_draft`` is ignored) and agrees with the PIL path's
        ``jpeg_draft=False`` within the tolerance in ``docs/design.md``; the cache treats the
        two as one (as it does devices) and keys both as ``jpeg_draft=False``.
    """
    _check_engine(engine)
    table = table_or_source if isinstance(table_or_source, ImageTable) else (
        load_image_table(table_or_source))
    _check_embed_args(model, batch_size, num_workers)
    check_intensity(intensity)
    on_device = engine == "local" and use_device_decode(decode, model.device, model.preprocess)
    if engine == "ray" and decode == "device":
        raise ValueError("decode='device' runs with engine='local' only; Ray workers decode "
                         "with PIL (use decode='auto' or 'cpu')")
    keys, failures = _item_keys(table)
    plan = split_preprocess(model.preprocess)
    draft_size = plan.draft_size if jpeg_draft and not on_device else None
    cache = None if cache_dir is None else EmbeddingCache(
        cache_dir, _image_cache_fields(model, draft_size, intensity), flush_every=flush_every,
        flush_seconds=flush_seconds, dim=model.embed_dim)
    embeddings = np.zeros((len(table), model.embed_dim), np.float32)
    done = np.zeros(len(table), dtype=bool)
    hashes_all = np.full(len(table), "", dtype=object)
    stats = np.full((len(table), len(PROPERTY_NAMES)), np.nan, dtype=np.float32)
    if cache is not None:
        _fill_from_cache(cache, table, keys, embeddings, done)
        cached = np.flatnonzero(done)
        hashes_all[cached], stats[cached] = cache.lookup_extras(
            [keys[i] for i in cached], len(PROPERTY_NAMES))
        if table.paths is not None:  # entries of older caches hold a hash of the bytes
            update_old_hashes(table.paths, hashes_all, cached)
    n_cached = int(done.sum())
    todo = np.asarray([i for i in range(len(table)) if keys[i] is not None and not done[i]],
                      dtype=np.int64)
    logger.info("%d images cached, %d to encode", n_cached, todo.size)
    if engine == "ray":
        from .embed_ray import ray_encoded_batches

        batches = ray_encoded_batches(
            table, todo, model, encode=_encode_image_batch, on_worker=plan.on_worker,
            draft_size=draft_size, intensity=intensity, properties=properties,
            batch_size=int(batch_size), address=ray_address)
    else:
        batches = _local_encoded_batches(table, todo, model, plan, draft_size, intensity,
                                         properties, int(batch_size), num_workers, on_device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_interrupt())  # restored after the cache's last flush
        if cache is not None:
            stack.enter_context(cache)  # flushes what is buffered on every exit, Ctrl-C included
        bar = stack.enter_context(tqdm(total=int(todo.size), unit="img", desc="embedding",
                                       disable=not progress, dynamic_ncols=True))
        for batch_rows, new, hashes, failed, batch_stats in batches:
            failures.extend(failed)
            if batch_rows:
                embeddings[batch_rows] = _store(new, batch_rows, hashes, cache, table, keys,
                                                batch_stats)
                done[batch_rows] = True
                hashes_all[batch_rows], stats[batch_rows] = hashes, batch_stats
            bar.update(len(batch_rows) + len(failed))
    indices = np.flatnonzero(done).astype(np.int64)
    failures_frame = pd.DataFrame(
        [(i, printable(table.describe(i)), reason) for i, reason in sorted(failures)],
        columns=["index", "path", "reason"])
    return EmbeddingResult(embeddings=embeddings[indices], indices=indices, failures=failures_frame,
                           table=table, n_cached=n_cached, n_encoded=indices.size - n_cached,
                           content_hashes=hashes_all[indices].tolist(),
                           properties=properties_frame(stats[indices]))


def _image_cache_fields(model: ClipModel, draft_size, intensity: str) -> dict:
    """The cache key's fields for images; "intensity" only when set (older caches stay valid)."""
    fields = {**model.cache_fields("image"), "jpeg_draft": draft_size is not None}
    if intensity != "none":
        fields["intensity"] = intensity
    return fields


def _check_engine(engine: str) -> None:
    """``engine`` must be "local" or "ray"; "ray" also needs the package (one-line error)."""
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray'; got {engine!r}")
    if engine == "ray":
        from .embed_ray import import_ray

        import_ray()


def _check_embed_args(model, batch_size, num_workers) -> None:
    if not isinstance(model, ClipModel):
        raise TypeError(
            f"model must be a ClipModel from load_clip_model; got {type(model).__name__}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if num_workers is not None and int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0 or None; got {num_workers}")


def _fill_from_cache(cache: EmbeddingCache, table: ImageTable, keys: list,
                     embeddings: np.ndarray, done: np.ndarray) -> None:
    """Copy the cached rows into ``embeddings`` (N, D) and mark them in ``done`` (N,)."""
    rows = np.asarray([i for i, key in enumerate(keys) if key is not None], dtype=np.int64)
    if not rows.size:
        return
    found, cached = cache.lookup([keys[i] for i in rows])
    if found.any():
        embeddings[rows[found]], done[rows[found]] = cached, True
    _warn_changed(cache, table, keys, rows[~found])


def _local_encoded_batches(table, todo, model: ClipModel, plan, draft_size, intensity: str,
                           properties: bool, batch_size: int, num_workers, on_device: bool):
    """Decode ``todo`` rows in DataLoader workers (or, ``on_device``, read them there and
    decode JPEGs on the model's device) and encode them here; yield (rows, (B, D) float32
    embeddings, content hashes, [(row, reason)] failures, (B, P) properties)."""
    if num_workers is None:
        num_workers = _default_num_workers(model.device, todo.size, batch_size)
    loader = torch.utils.data.DataLoader(
        (JpegBytesDataset if on_device else ImageDataset)(
            table, todo, plan.on_worker, draft_size, intensity, properties),
        batch_size=batch_size, num_workers=int(num_workers),
        collate_fn=collate_jpeg_bytes if on_device else collate_images,
        pin_memory=model.device.type == "cuda")
    if on_device:  # workers read the JPEG files, the model's device decodes them
        loader = decode_batches(loader, tensor_preprocess(model.preprocess), model.device,
                                on_worker=plan.on_worker, intensity=intensity,
                                properties=properties)
    for rows, batch, hashes, failed, stats in loader:
        yield rows, (_encode_image_batch(batch, model) if rows else None), hashes, failed, stats


def _store(new, rows: list, hashes: list, cache, table, keys, properties=None):
    """(B, D) new embeddings -> float32 rounded through float16 as stored; cache them (with
    their (B, P) image properties) if any."""
    if cache is not None:
        cache.add([keys[i] for i in rows], [table.describe(i) for i in rows], hashes, new,
                  properties)
    return from_stored(to_stored(new))


def _item_keys(table: ImageTable) -> tuple:
    """-> (N cache keys, None where the item is already known to fail; [(row, reason)])."""
    keys, failures = [], []
    for row in range(len(table)):
        try:
            keys.append(_item_key(table, row))
        except OSError as err:
            keys.append(None)
            failures.append((row, f"cannot read file: {err.strerror or err}"))
        except UnicodeEncodeError:  # a name in another encoding: no output could hold it
            keys.append(None)
            failures.append((row, "file name is not valid UTF-8; rename the file"))
    return keys, failures


def _item_key(table: ImageTable, row: int) -> str:
    if table.paths is not None:
        return file_key(table.paths[row])
    if isinstance(table.images, np.ndarray):
        return array_key(table.images[row])
    fingerprint = getattr(table.images, "fingerprint", None)
    if fingerprint:
        return hash_bytes(f"dataset\0{fingerprint}\0{row}".encode())
    return array_key(np.asarray(table.images[row]))


def _warn_changed(cache: EmbeddingCache, table: ImageTable, keys: list, rows: np.ndarray) -> None:
    if table.paths is None or not rows.size:
        return
    changed = cache.stale_sources([keys[i] for i in rows], [table.describe(i) for i in rows])
    if changed:
        warnings.warn(f"{len(changed)} image(s) changed since they were cached (e.g. {changed[0]});"
                      " re-embedding them", UserWarning, stacklevel=4)


def _default_num_workers(device: torch.device, n_images: int, batch_size: int) -> int:
    """Decoding processes: none for a single batch; on CPU leave the cores to the model; on a
    GPU every core but the one feeding it (a GPU encodes far faster than one core decodes)."""
    if n_images <= batch_size:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return max(1, min(16, cores - 1)) if device.type == "cuda" else min(4, cores // 4)
