"""Embedding cache: float16 rows on disk, written in atomic chunks, keyed per item.

Layout: ``<cache_dir>/<slug>-<digest>/`` per model (digest = hash of the model name, weights id,
preprocessing and cache format), holding ``meta.json`` and ``chunk-*.npz`` files. Each chunk holds
``keys`` (item identity), ``sources`` (path or name), ``content_hashes`` and ``embeddings``
(float16). A chunk is written to a temporary name, flushed to disk and then ``os.replace``-d into
place, so a run killed at any moment leaves only whole chunks behind; temporary files are never
read. A later run reads every chunk and embeds only the items whose key is absent.

Item key = hash(absolute path, size, mtime) for files, hash(pixels) for in-memory images, or
hash(text) for prompts. The content hash of what was embedded is stored alongside
(:mod:`clipsei.images.content_hash`; chunks written before it held a hash of the file bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._paths import mark_output_dir

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
_TMP_PREFIX = ".tmp-"


def hash_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path, *, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_key(path) -> str:
    """Identity of a file as it is now: hash of (absolute path, size in bytes, mtime in ns).

    Raises ``FileNotFoundError`` if the file is gone.
    """
    path = os.path.abspath(path)
    stat = os.stat(path)
    return hash_bytes(f"file\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())


def array_key(array: np.ndarray) -> str:
    """Identity of an in-memory image: hash of its dtype, shape and pixels."""
    array = np.ascontiguousarray(array)
    header = f"array\0{array.dtype.str}\0{array.shape}\0".encode()
    return hash_bytes(header + array.tobytes())


def text_key(text: str) -> str:
    """Identity of a prompt text."""
    return hash_bytes(f"text\0{text}".encode())


class EmbeddingCache:
    """Per-model store of float16 embeddings, one row per item key.

    fields: what makes embeddings of this model comparable (name, weights id, preprocessing...);
        JSON-serialisable. Different fields give a different folder.
    flush_every: rows buffered in memory before a chunk is written.
    flush_seconds: a chunk is also written once this many seconds have passed since the last
        one (or since the cache was opened), so a kill loses at most about that much work.
    dim: D, the length of a row; chunks whose rows have another length are ignored (with a
        warning). None: the first chunk read sets it.
    """

    def __init__(self, cache_dir, fields: dict, *, flush_every: int = 1024,
                 flush_seconds: float = 30.0, dim: int | None = None):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1; got {flush_every}")
        if not flush_seconds >= 0:
            raise ValueError(f"flush_seconds must be >= 0; got {flush_seconds}")
        self.fields = {**fields, "cache_format": CACHE_FORMAT}
        digest = hash_bytes(json.dumps(self.fields, sort_keys=True, default=str).encode())[:16]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(fields.get("name", "model")))[-40:]
        self.path = Path(cache_dir).expanduser() / f"{slug}-{digest}"
        self.flush_every, self.flush_seconds, self.dim = flush_every, flush_seconds, dim
        self._buffer: list = []
        self._last_flush = time.monotonic()
        self._rows: dict | None = None  # key -> (embedding row, source), read lazily
        self._extras: dict = {}  # key -> (content hash, image properties or None)

    def lookup(self, keys) -> tuple:
        """Return (found (N,) bool, embeddings (n_found, D) float32, unit norm) for ``keys``."""
        rows = self._load()
        found = np.array([key in rows for key in keys], dtype=bool)
        hits = [rows[key][0] for key, hit in zip(keys, found) if hit]
        return found, from_stored(np.stack(hits)) if hits else np.zeros((0, 0), np.float32)

    def lookup_extras(self, keys, n_properties: int) -> tuple:
        """(content hashes, (n, n_properties) float32 image properties) stored with ``keys``;
        "" and NaN where a chunk written before they were kept has none."""
        self._load()
        extras = [self._extras.get(key, ("", None)) for key in keys]
        properties = np.full((len(keys), n_properties), np.nan, dtype=np.float32)
        for row, (_, values) in enumerate(extras):
            if values is not None and len(values) == n_properties:
                properties[row] = values
        return [digest for digest, _ in extras], properties

    def stale_sources(self, keys, sources) -> list:
        """Sources that are cached under another key (e.g. a file changed since it was cached)."""
        rows = self._load()
        cached_sources = {source for _, source in rows.values()}
        return [s for k, s in zip(keys, sources) if k not in rows and s in cached_sources]

    def add(self, keys, sources, content_hashes, embeddings: np.ndarray,
            properties=None) -> None:
        """Buffer (n, D) embeddings of n items (and their (n, P) image properties); write a
        chunk once ``flush_every`` rows wait or ``flush_seconds`` have passed since the last."""
        embeddings = np.asarray(embeddings)
        if properties is None:
            properties = np.full((len(keys), 0), np.nan, dtype=np.float32)
        properties = np.asarray(properties, dtype=np.float32)
        self._buffer.append((list(keys), list(sources), list(content_hashes), embeddings,
                             properties))
        rows = self._load()
        for key, source, row, digest, values in zip(keys, sources, to_stored(embeddings),
                                                     content_hashes, properties):
            rows[key] = (row, source)
            self._extras[key] = (digest, values if values.size else None)
        if (sum(len(item[0]) for item in self._buffer) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one chunk (atomically); a no-op when nothing is buffered."""
        if not self._buffer:
            return
        keys = [key for item in self._buffer for key in item[0]]
        sources = [source for item in self._buffer for source in item[1]]
        hashes = [digest for item in self._buffer for digest in item[2]]
        embeddings = np.concatenate([item[3] for item in self._buffer])
        widths = {item[4].shape[1] for item in self._buffer}
        properties = (np.concatenate([item[4] for item in self._buffer])
                      if len(widths) == 1 and 0 not in widths else None)
        self._write_chunk(keys, sources, hashes, to_stored(embeddings), properties)
        self._buffer = []
        self._last_flush = time.monotonic()

    def write_matrix(self, keys, path) -> np.ndarray:
        """The stored float16 rows of ``keys``, in that order, as one (N, D) ``.npy`` file
        at ``path`` (written under a temporary name, then renamed; an existing file is never
        replaced), returned as a read-only memory map (:func:`open_matrix`): a million rows
        stay on disk instead of 2 GB of float32 in memory.

        Raises ``KeyError`` naming the first key not in the cache and ``FileExistsError``
        when ``path`` exists.
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; write_matrix never replaces a file")
        rows = self._load()
        missing = next((key for key in keys if key not in rows), None)
        if missing is not None:
            raise KeyError(f"key {missing!r} is not in the cache {self.path}")
        shape = (len(keys), self.dim or 0)
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
        try:
            matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            for position, key in enumerate(keys):
                matrix[position] = rows[key][0]
            matrix.flush()
            del matrix
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return open_matrix(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.flush()

    def _write_chunk(self, keys, sources, hashes, embeddings: np.ndarray,
                     properties=None) -> None:
        if not self.path.parent.exists():  # a cache folder clipsei creates is marked as its own
            mark_output_dir(self.path.parent, kind="cache")
        mark_output_dir(self.path, kind="cache")  # so that a scan of a folder above skips it
        meta = self.path / "meta.json"
        if not meta.exists():
            _atomic_write(meta, lambda h: h.write(json.dumps(self.fields, indent=2,
                                                             default=str).encode()))
        arrays = {"keys": np.asarray(keys, dtype=str), "sources": np.asarray(sources, dtype=str),
                  "content_hashes": np.asarray(hashes, dtype=str), "embeddings": embeddings}
        if properties is not None:
            arrays["properties"] = properties
        target = self.path / f"chunk-{uuid.uuid4().hex}.npz"
        _atomic_write(target, lambda h: np.savez(h, **arrays))
        logger.info("cached %d embeddings in %s", len(keys), target)

    def _load(self) -> dict:
        if self._rows is None:
            self._rows = {}
            _remove_stale_tmp_files(self.path)
            for chunk in sorted(self.path.glob("chunk-*.npz")):
                self._read_chunk(chunk, self._rows)
        return self._rows

    def _read_chunk(self, chunk: Path, rows: dict) -> None:
        """Add a chunk's rows to ``rows``; an unreadable or malformed chunk is skipped (kept)."""
        try:
            with np.load(chunk, allow_pickle=False) as data:
                keys, sources = data["keys"], data["sources"]
                embeddings = data["embeddings"]
                hashes = data["content_hashes"] if "content_hashes" in data else None
                properties = data["properties"] if "properties" in data else None
            problem = self._chunk_problem(keys, sources, embeddings)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            problem = str(err)
        if problem:
            warnings.warn(f"ignoring unreadable cache chunk {chunk}: {problem}; its rows are "
                          "embedded again", UserWarning, stacklevel=5)
            return
        self.dim = embeddings.shape[1]
        for position, (key, source, row) in enumerate(zip(keys.tolist(), sources.tolist(),
                                                          embeddings)):
            rows[key] = (row, source)
            self._extras[key] = _extras_at(hashes, properties, position)

    def _chunk_problem(self, keys, sources, embeddings) -> str:
        """What is wrong with a chunk's arrays, or "" when they fit together and this cache."""
        if embeddings.ndim != 2 or embeddings.dtype.kind != "f":
            return f"embeddings must be 2-D floats; got {embeddings.dtype} {embeddings.shape}"
        if not keys.ndim == sources.ndim == 1 or not (
                keys.shape[0] == sources.shape[0] == embeddings.shape[0]):
            return (f"{keys.shape} keys, {sources.shape} sources and {embeddings.shape[0]} "
                    "embedding rows do not match")
        if self.dim is not None and embeddings.shape[1] != self.dim:
            return f"rows of length {embeddings.shape[1]}, expected {self.dim}"
        return ""


def _extras_at(hashes, properties, position: int) -> tuple:
    """(content hash, properties row or None) of a chunk's row, tolerating older chunks."""
    digest = str(hashes[position]) if hashes is not None and position < len(hashes) else ""
    values = None
    if properties is not None and properties.ndim == 2 and position < properties.shape[0]:
        values = np.asarray(properties[position], dtype=np.float32)
    return digest, values


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so the
    ``finally``/``__exit__`` code of the block (a cache flush) runs before the process ends.

    SIGTERM is what ``kill``, SLURM, ``docker stop`` and Kubernetes send. The previous handler
    is restored on exit. Outside the main thread (where Python cannot set handlers) it does
    nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"received signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:  # None: a handler set outside Python, which cannot be put back; use the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def to_stored(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) float -> float16 as kept on disk."""
    return np.asarray(embeddings, dtype=np.float16)


def from_stored(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) float16 from disk -> float32 rows re-normalised to unit L2 norm."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def open_matrix(path) -> np.ndarray:
    """A float16 (N, D) ``.npy`` file (as :meth:`EmbeddingCache.write_matrix` writes it) as a
    read-only memory map; ``clipsei.LabelIssueDetector.fit`` reads it a block at a time.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for another dtype or
    shape.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no embedding matrix at {path}")
    matrix = np.load(path, mmap_mode="r")
    if matrix.dtype != np.float16 or matrix.ndim != 2:
        raise ValueError(f"{path} must hold a 2-D float16 array; got {matrix.dtype} "
                         f"{matrix.shape}")
    return matrix


def _remove_stale_tmp_files(folder: Path, *, max_age_s: float = 3600.0) -> None:
    """Delete temporary files left by a killed run (old enough not to be another run's)."""
    now = time.time()
    for tmp in folder.glob(f"{_TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()


def _atomic_write(target: Path, write) -> None:
    """Call ``write(handle)`` on a temporary file next to ``target``, fsync, then rename."""
    tmp = target.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{target.name}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
