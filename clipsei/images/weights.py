"""Which weights ``load_clip_model`` loads, how they are keyed, and whether they can be had.

Resolves a model name and ``pretrained`` value into open_clip's arguments and a weights id for
the cache key, and checks before any download that weights open_clip would fetch are either in
the local cache or reachable, so an offline machine gets one clear line at once instead of
minutes of retries.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import open_clip
import torch

from .cache import hash_file

logger = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_HF_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_RANDOM_WEIGHTS_WARNING = (
    "pretrained='none': the model has RANDOM weights. Its embeddings carry no meaning and must "
    "not be used to find label issues; use them only for tests and speed benchmarks."
)
_OFFLINE_ADVICE = (
    "Instead: pass a local checkpoint file (--pretrained /path/to/weights.bin), use an "
    "'hf-hub:org/repo' model already in the Hugging Face cache, use --pretrained none for a dry "
    "run with random weights, or try `clipsei demo`")


def resolve_weights(name: str, pretrained) -> tuple:
    """-> (keyword arguments for open_clip, weights id; ending in ':' = hash after loading)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str; got {name!r}")
    if name.startswith("hf-hub:"):
        return {}, name
    if name.startswith("local-dir:"):
        if not Path(name[len("local-dir:"):]).is_dir():
            raise FileNotFoundError(f"model folder not found: {name[len('local-dir:'):]}")
        return {}, "local-dir:"
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise ValueError(f"unknown model name {name!r}; close matches: {close}. See "
                         "open_clip.list_models(), or use 'hf-hub:org/repo' or 'local-dir:PATH'")
    if pretrained is None or str(pretrained).lower() == "none":
        warnings.warn(_RANDOM_WEIGHTS_WARNING, UserWarning, stacklevel=3)
        logger.warning(_RANDOM_WEIGHTS_WARNING)
        return {"pretrained": None, "load_weights": False}, "random:"
    pretrained = os.fspath(pretrained)
    if os.path.isfile(pretrained):
        return {"pretrained": pretrained}, f"sha256:{hash_file(pretrained)}"
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        return {"pretrained": pretrained}, pretrained
    if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
    raise ValueError(f"pretrained must be 'none', a checkpoint file or one of {name}'s tags "
                     f"{tags}; got {pretrained!r}")


def hash_weights(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_weights_available(name: str, pretrained, *, cache_dir=None,
                            timeout_s: float = 3.0) -> None:
    """Raise ``RuntimeError`` (one line, with what to do instead) when the weights open_clip
    would download for ``name``/``pretrained`` are not in the local cache and cannot be
    fetched: ``HF_HUB_OFFLINE`` is set, or one connection attempt to the server fails within
    ``timeout_s`` seconds. A no-op for local files, random weights and cached weights."""
    remote = _remote_weights(name, pretrained, cache_dir)
    if remote is None:
        return
    url, cached = remote
    if cached:
        return
    reason = _unreachable_reason(url, timeout_s)
    if reason:
        weights = "its weights" if name.startswith("hf-hub:") else f"weights {pretrained!r}"
        raise RuntimeError(f"could not load model {name!r} with {weights}: they are not in the "
                           f"local cache and {reason}. {_OFFLINE_ADVICE}")


def _remote_weights(name: str, pretrained, cache_dir):
    """-> (server URL, whether the files are cached), or None when nothing is downloaded."""
    from huggingface_hub import constants

    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:"):]
        cached = _hf_cached(repo, "open_clip_config.json", cache_dir) and any(
            _hf_cached(repo, filename, cache_dir) for filename in _HF_WEIGHTS)
        return constants.ENDPOINT, cached
    if (name.startswith("local-dir:") or pretrained is None or str(pretrained).lower() == "none"
            or os.path.isfile(pretrained)):
        return None
    config = open_clip.get_pretrained_cfg(name, pretrained) or {}
    if "file" in config:
        return None
    if config.get("hf_hub"):
        repo, filename = os.path.split(config["hf_hub"])
        filenames = [filename] if filename else list(_HF_WEIGHTS)
        if filename.endswith((".bin", ".pth")):
            filenames.append(filename[:-4] + ".safetensors")
        return constants.ENDPOINT, any(_hf_cached(repo, f, cache_dir) for f in filenames)
    if config.get("url"):
        folder = cache_dir or os.path.expanduser("~/.cache/clip")
        return config["url"], os.path.isfile(os.path.join(folder, os.path.basename(config["url"])))
    return None


def _hf_cached(repo: str, filename: str, cache_dir) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename, cache_dir=cache_dir), str)


def _unreachable_reason(url: str, timeout_s: float) -> str:
    """Why ``url``'s server cannot be reached now, or "" when it can (or a proxy decides)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and url.startswith(constants.ENDPOINT):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(variable) for variable in _PROXY_VARIABLES):
        return ""  # only the proxy knows; let the download try
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{parts.hostname}:{port} cannot be reached ({err.strerror or err})"
    return ""
