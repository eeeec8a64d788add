"""Embedding on a Ray cluster: Ray Data decodes images in CPU tasks and encodes them on a pool of
actors holding one model each (GPU actors when the cluster has GPUs, CPU actors otherwise).

:func:`clipsei.images.embed.embed_images` with ``engine="ray"`` consumes
:func:`ray_encoded_batches` where the local engine runs its DataLoader: the driver still checks
the cache, writes every new embedding to it and collects the failures, so a Ray run leaves the
same content-keyed cache a local run does. Decoding reuses
:class:`clipsei.images.decode.ImageDataset`. When a worker dies, Ray Data's defaults redo its
work: an actor pool's actors are restarted without limit and their lost batches retried
(``max_restarts=-1``, ``max_task_retries=-1``), and Ray Core re-runs a decode task whose
worker died (``max_retries=3``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os

import numpy as np
import torch

from .decode import ImageDataset
from .properties import PROPERTY_NAMES

logger = logging.getLogger(__name__)

RAY_MISSING = "engine='ray' needs Ray Data: pip install 'clipsei[ray]'"


def import_ray():
    """Import ``ray`` and ``ray.data``, or raise an ``ImportError`` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra (pyarrow) must be there too
    except ImportError as err:
        raise ImportError(RAY_MISSING) from err
    return ray


def ray_encoded_batches(table, rows: np.ndarray, model, *, encode, on_worker, draft_size,
                        intensity: str, properties: bool, batch_size: int, address=None):
    """Decode and encode the ``rows`` of ``table`` on Ray: an iterator over what the local
    engine yields.

    Each item: (rows list, (B, D) float32 embeddings (float16-exact), content hashes,
    [(row, reason)] of images that could not be read, (B, P) float32 image properties), in
    the order batches finish. ``encode(batch, model)`` runs in the actors (it is
    :func:`clipsei.images.embed._encode_image_batch`); ``address`` is the cluster to join
    (None: the current connection, else ``RAY_ADDRESS``, a cluster ``ray start`` began on this
    machine, or a new local instance). Joins the cluster at once, not on the first ``next``:
    ``ray.init`` installs a SIGTERM handler that aborts the process, which the caller's own
    handler (:func:`clipsei.images.cache.sigterm_as_interrupt`, a flush of the cache) must
    replace afterwards.
    """
    if not len(rows):
        return iter(())
    ray = _connect(address)
    read_options = {"preprocess": on_worker, "draft_size": draft_size, "intensity": intensity,
                    "properties": properties}
    n_blocks = max(1, math.ceil(len(rows) / (4 * batch_size)))
    pixels = _probe_pixels(on_worker)
    decoded = ray.data.from_numpy(np.array_split(np.asarray(rows, np.int64), n_blocks)).map_batches(
        _decode_batch, fn_kwargs={"table": table, "read_options": read_options,
                                 "pixels": pixels}, batch_size=batch_size,
        batch_format="numpy", num_cpus=1)
    n_actors, num_gpus, threads = _encoder_pool(ray.cluster_resources())
    logger.info("ray: %d encoder actor(s), %s each", n_actors,
                "1 GPU" if num_gpus else f"{threads} CPU")
    packed = _pack_model(model)
    # Ray Data pickles a stage's constructor arguments into its UDF, more than once (and warns
    # past 100 MiB): the model goes to the object store once and the actors get a reference.
    # Ray still logs that the actors have constructor arguments in the object store: those are
    # Ray Data's own (its UDF and context), on every actor pool (ray-project/ray#57733)
    packed_ref = ray.put(packed)
    # the actors' memory, asked for: Ray schedules them by it (and warns when they use more),
    # and a request also keeps Ray Data from fusing the decode tasks into the actors (it fuses
    # map stages whose resource requests are equal), which would leave all decoding to the
    # actors' own CPUs
    encoded = decoded.map_batches(
        _Encoder, fn_constructor_args=(packed_ref, encode, bool(num_gpus), threads),
        batch_size=batch_size, batch_format="numpy", num_gpus=num_gpus, num_cpus=threads,
        memory=encoder_memory(len(packed["model"]), batch_size * pixels.nbytes),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=n_actors))
    return map(_unpack_batch, encoded.iter_batches(batch_size=None, batch_format="numpy"))


def _connect(address):
    """Join the cluster at ``address`` (or reuse the current connection, or start a local
    instance, with token authentication unless ``RAY_AUTH_MODE`` says otherwise); return
    ``ray``."""
    ray = import_ray()
    if not ray.is_initialized():
        _choose_token_auth(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    elif address is not None:
        logger.info("ray is already initialised; ignoring address %s", address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # embed_images draws its own bar
    return ray


def _choose_token_auth(address) -> None:
    """Set ``RAY_AUTH_MODE=token`` where ``ray.init(address=address)`` will start a new local
    instance and the mode is unset: the mode Ray picks there by default, but chosen, so Ray
    does not warn that it chose it. A mode the user set, or joining a cluster, is left alone.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:  # the Ray versions that turn token authentication on by default, with a warning
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth, enable_token_auth_by_default)  # noqa: F401
    except ImportError:
        return
    from ray._private.services import canonicalize_bootstrap_address

    if canonicalize_bootstrap_address(address) is None:  # None: no cluster to join
        _enable_token_auth()  # Ray's own step: the variable, and its settings re-read


# an encoder actor's own process (Python, torch, Ray's worker) before any model: a tiny-model
# actor peaked at 543 MiB on the project's 2-core test machine
ACTOR_RUNTIME_BYTES = 768 * 2**20


def encoder_memory(model_bytes: int, batch_pixel_bytes: int) -> int:
    """Bytes of RAM to request per encoder actor: the runtime, the model three times (its
    serialised bytes, the loaded module, a transient copy while loading) and eight batches of
    pixels (the batch in flight, its float copies and the layers' activations)."""
    return ACTOR_RUNTIME_BYTES + 3 * model_bytes + 8 * batch_pixel_bytes


def _encoder_pool(resources: dict) -> tuple:
    """(number of actors, GPUs per actor, CPU threads per actor) for the cluster's resources:
    one actor per GPU; without GPUs, actors of up to 4 threads on the CPUs left after a quarter
    (at least one) is kept for decoding."""
    n_gpus = int(resources.get("GPU", 0))
    if n_gpus:
        return n_gpus, 1, 1
    cpus = max(1, int(resources.get("CPU", 1)))
    threads = min(4, max(1, cpus // 4))
    return max(1, (cpus - max(1, cpus // 4)) // threads), 0, threads


def _probe_pixels(on_worker) -> np.ndarray:
    """A zero array shaped and typed as ``on_worker``'s output, to stand in for failed rows
    (a Ray Data column needs one shape per batch)."""
    from PIL import Image

    return np.zeros_like(np.asarray(on_worker(Image.new("RGB", (64, 64)))))


def _decode_batch(batch: dict, *, table, read_options: dict, pixels: np.ndarray) -> dict:
    """Ray Data task: {"data": (B,) rows} -> rows, pixels (zeros where unreadable), content
    hashes, reasons ("" when read) and (B, P) properties, via ``ImageDataset``'s reading."""
    rows = np.asarray(batch["data"], np.int64)
    items = ImageDataset(table, rows, **read_options)
    out = {"row": rows, "pixels": np.repeat(pixels[None], len(rows), axis=0),
           "content_hash": np.full(len(rows), "", dtype=object),
           "reason": np.full(len(rows), "", dtype=object),
           "properties": np.zeros((len(rows), len(PROPERTY_NAMES)), np.float32)}
    for position in range(len(rows)):
        _, tensor, digest, reason, values = items[position]
        if tensor is not None:
            out["pixels"][position] = np.asarray(tensor)
        out["content_hash"][position], out["reason"][position] = digest, reason
        out["properties"][position] = values
    return out


def _pack_model(model) -> dict:
    """The ``ClipModel``'s fields with its module as bytes (CUDA tensors stay loadable on a
    CPU-only node) and no tokenizer (images only)."""
    buffer = io.BytesIO()
    torch.save(model.model, buffer)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    return {**fields, "model": buffer.getvalue(), "tokenizer": None,
            "device": torch.device("cpu"), "cls": type(model)}


class _Encoder:
    """Ray Data actor: one model on the actor's GPU or CPU; decoded batch -> float16
    embeddings (zeros for unreadable rows), pixels dropped."""

    def __init__(self, packed_ref, encode, use_gpu: bool, threads: int):
        fields = dict(import_ray().get(packed_ref))  # _pack_model's dict
        cls = fields.pop("cls")
        device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(threads)
        module = torch.load(io.BytesIO(fields.pop("model")), map_location=device,
                            weights_only=False)  # bytes this run's driver wrote
        if use_gpu:  # as load_clip_model does on CUDA
            module = module.to(memory_format=torch.channels_last)
        self.model = cls(model=module.eval(), **{**fields, "device": device})
        self.encode = encode

    def __call__(self, batch: dict) -> dict:
        read = np.asarray([reason == "" for reason in batch["reason"]], dtype=bool)
        embeddings = np.zeros((len(read), self.model.embed_dim), np.float16)
        if read.any():
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][read]))
            embeddings[read] = self.encode(pixels, self.model).astype(np.float16)
        return {"row": batch["row"], "embedding": embeddings,
                "content_hash": batch["content_hash"], "reason": batch["reason"],
                "properties": batch["properties"]}


def _unpack_batch(batch: dict) -> tuple:
    """An encoded Ray batch -> (rows, (B, D) float32, hashes, [(row, reason)], (B, P))."""
    rows = np.asarray(batch["row"], np.int64)
    read = np.asarray([reason == "" for reason in batch["reason"]], dtype=bool)
    failed = [(int(row), str(reason)) for row, reason in zip(rows[~read], batch["reason"][~read])]
    return (rows[read].tolist(), np.asarray(batch["embedding"][read], np.float32),
            [str(digest) for digest in batch["content_hash"][read]], failed,
            np.asarray(batch["properties"][read], np.float32))
