"""The embedding cache: float16 chunks, atomic writes, resume after a crash, per-file keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import clipsei.images.embed
from clipsei.images.cache import EmbeddingCache, file_key, from_stored, sigterm_as_interrupt
from clipsei.images.data import load_image_table
from clipsei.images.embed import embed_images


def _chunks(cache_dir):
    return sorted(cache_dir.glob("*/chunk-*.npz"))


def test_store_lookup_and_disk_format(tmp_path, rng):
    rows = rng.normal(size=(5, 8)).astype(np.float32)
    with EmbeddingCache(tmp_path, {"name": "m", "weights_id": "w"}, flush_every=3) as cache:
        cache.add(["a", "b"], ["pa", "pb"], ["ha", "hb"], rows[:2])
        assert _chunks(tmp_path) == []  # below flush_every: still in memory
        cache.add(["c", "d", "e"], ["pc", "pd", "pe"], ["hc", "hd", "he"], rows[2:])
        assert len(_chunks(tmp_path)) == 1
    reopened = EmbeddingCache(tmp_path, {"name": "m", "weights_id": "w"})
    found, cached = reopened.lookup(["e", "zz", "a"])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(cached, from_stored(rows[[4, 0]].astype(np.float16)))
    with np.load(_chunks(tmp_path)[0]) as chunk:
        assert chunk["embeddings"].dtype == np.float16
        assert chunk["content_hashes"].tolist() == ["ha", "hb", "hc", "hd", "he"]
    other = EmbeddingCache(tmp_path, {"name": "m", "weights_id": "other"})
    assert other.path != reopened.path and not other.lookup(["a"])[0].any()


def test_half_written_and_corrupt_chunks_are_never_read(tmp_path, rng):
    cache = EmbeddingCache(tmp_path, {"name": "m"}, flush_every=1)
    cache.add(["a"], ["pa"], ["ha"], rng.normal(size=(1, 4)))
    (cache.path / ".tmp-123-chunk-x.npz").write_bytes(b"PK\x03\x04 half written")
    (cache.path / ".tmp-old-chunk-y.npz").write_bytes(b"left by a run killed long ago")
    os.utime(cache.path / ".tmp-old-chunk-y.npz", (0, 0))
    (cache.path / "chunk-corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match="ignoring unreadable cache chunk .*chunk-corrupt"):
        found, _ = EmbeddingCache(tmp_path, {"name": "m"}).lookup(["a"])
    assert found.tolist() == [True]
    assert [p.name for p in cache.path.glob(".tmp-*")] == [".tmp-123-chunk-x.npz"]


def test_resume_after_exception_equals_uninterrupted_run(image_folder, tiny_clip, monkeypatch,
                                                         tmp_path):
    table = load_image_table(image_folder)
    full = embed_images(table, tiny_clip, cache_dir=tmp_path / "full", batch_size=2,
                        num_workers=0, progress=False)
    real_encode, calls = clipsei.images.embed._encode_image_batch, []

    def crash_on_third_batch(batch, model):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(batch, model)

    monkeypatch.setattr(clipsei.images.embed, "_encode_image_batch", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        embed_images(table, tiny_clip, cache_dir=tmp_path / "resume", batch_size=2,
                     num_workers=0, progress=False, flush_every=100)  # flushed on the way out
    monkeypatch.setattr(clipsei.images.embed, "_encode_image_batch", real_encode)
    resumed = embed_images(table, tiny_clip, cache_dir=tmp_path / "resume", batch_size=2,
                           num_workers=0, progress=False)
    assert (resumed.n_cached, resumed.n_encoded) == (4, 4)
    np.testing.assert_array_equal(resumed.embeddings, full.embeddings)


_KILLED_RUN = """
import sys, time, warnings
warnings.simplefilter("ignore")
import clipsei.images.embed as embed
model = embed.load_clip_model("clipsei-tiny", "none", device="cpu")
real, encoded = embed._encode_image_batch, [0]
def encode(batch, model):  # the real encoder, slowed so that the parent acts mid-run
    time.sleep(0.05)
    out = real(batch, model)
    encoded[0] += len(out)
    print(encoded[0], flush=True)
    return out
embed._encode_image_batch = encode
embed.embed_images(sys.argv[1], model, cache_dir=sys.argv[2], batch_size=4, num_workers=0,
                   progress=False, flush_seconds=0.5)
"""


def _cached_rows(cache_dir) -> int:
    return sum(len(np.load(chunk)["keys"]) for chunk in _chunks(cache_dir))


@pytest.mark.slow  # a fresh interpreter imports open_clip (~6 s on 2 cores), 300 images
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_kill_or_sigterm_mid_run(sig, tiny_clip, tmp_path, write_images):
    folder, cache_dir = tmp_path / "images", tmp_path / "cache"
    write_images(folder, n_per_class=150)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(folder), str(cache_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not _chunks(cache_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first chunk is written by time (flush_seconds), long before 1024
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    assert _chunks(cache_dir) and process.returncode < 0, stderr.decode()[-2000:]
    encoded = int(stdout.split()[-1])
    assert encoded < 300, "the run ended before the signal"
    cached = _cached_rows(cache_dir)
    if sig == signal.SIGTERM:  # flushed on the way out, like Ctrl-C (a batch may be in flight)
        assert encoded - 4 <= cached <= encoded and b"KeyboardInterrupt" in stderr
    resumed = embed_images(folder, tiny_clip, cache_dir=cache_dir, batch_size=4,
                           num_workers=0, progress=False)
    assert (resumed.n_cached, resumed.n_encoded) == (cached, 300 - cached) and cached > 0
    full = embed_images(folder, tiny_clip, batch_size=4, num_workers=0, progress=False)
    np.testing.assert_array_equal(resumed.embeddings, full.embeddings)


def test_chunks_are_written_by_elapsed_time(tmp_path, rng):
    rows = rng.normal(size=(3, 4)).astype(np.float32)
    with EmbeddingCache(tmp_path, {"name": "m"}, flush_seconds=0.0) as cache:
        cache.add(["a"], ["pa"], ["ha"], rows[:1])
        cache.add(["b", "c"], ["pb", "pc"], ["hb", "hc"], rows[1:])
        assert len(_chunks(tmp_path)) == 2  # far below flush_every, but time is up each add
    with EmbeddingCache(tmp_path / "slow", {"name": "m"}, flush_seconds=3600) as cache:
        cache.add(["a"], ["pa"], ["ha"], rows[:1])
        assert _chunks(tmp_path / "slow") == []
    with pytest.raises(ValueError, match="flush_seconds must be >= 0; got -1"):
        EmbeddingCache(tmp_path, {"name": "m"}, flush_seconds=-1)


def test_sigterm_interrupts_the_block_and_the_old_handler_comes_back():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("arrays, problem", [
    ({"embeddings": np.ones((8, 5), np.float16)}, "rows of length 5, expected 16"),
    ({"embeddings": np.ones((3, 16), np.float16)}, "do not match"),
    ({"embeddings": np.ones(8 * 16, np.float16)}, "must be 2-D floats"),
    ({"keys": np.array([[1, 2]])}, "do not match"),
])
def test_malformed_chunk_is_skipped_kept_and_its_rows_embedded_again(
        image_folder, tiny_clip, tmp_path, arrays, problem):
    first = embed_images(image_folder, tiny_clip, cache_dir=tmp_path, num_workers=0,
                         progress=False)
    (chunk,) = _chunks(tmp_path)
    with np.load(chunk) as data:
        stored = {name: data[name] for name in data.files}
    np.savez(chunk, **{**stored, **arrays})
    with pytest.warns(UserWarning, match=f"ignoring unreadable cache chunk .*{problem}"):
        again = embed_images(image_folder, tiny_clip, cache_dir=tmp_path, num_workers=0,
                             progress=False)
    assert (again.n_cached, again.n_encoded) == (0, 8) and chunk.exists()
    np.testing.assert_array_equal(again.embeddings, first.embeddings)


def test_changed_or_added_file_reembeds_alone(image_folder, tiny_clip, tmp_path, write_images):
    first = embed_images(image_folder, tiny_clip, cache_dir=tmp_path / "c", num_workers=0,
                         progress=False)
    assert (first.n_cached, first.n_encoded) == (0, 8)
    changed = image_folder / "dog" / "img01.jpg"
    write_images(tmp_path / "other", n_per_class=2, seed=7)
    changed.write_bytes((tmp_path / "other" / "dog" / "img01.jpg").read_bytes())
    os.utime(changed, ns=(10**18, 10**18))
    with pytest.warns(UserWarning, match=r"1 image\(s\) changed since they were cached .*img01"):
        second = embed_images(image_folder, tiny_clip, cache_dir=tmp_path / "c", num_workers=0,
                              progress=False)
    assert (second.n_cached, second.n_encoded) == (7, 1)
    row = load_image_table(image_folder).paths.index(str(changed))
    assert not np.allclose(second.embeddings[row], first.embeddings[row])
    (image_folder / "cat" / "new.png").write_bytes((tmp_path / "other" / "cat" / "img00.jpg")
                                                   .read_bytes())
    third = embed_images(image_folder, tiny_clip, cache_dir=tmp_path / "c", num_workers=0,
                         progress=False)
    assert (third.n_cached, third.n_encoded) == (8, 1)


def test_file_key_follows_size_and_mtime(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    key = file_key(path)
    assert file_key(path) == key
    os.utime(path, ns=(1, 1))
    assert file_key(path) != key
    with pytest.raises(FileNotFoundError):
        file_key(tmp_path / "gone")


def test_cache_module_needs_no_torch():
    code = "import sys, clipsei.images.cache; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_flush_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="flush_every must be >= 1; got 0"):
        EmbeddingCache(tmp_path, {"name": "m"}, flush_every=0)


def test_write_matrix_memory_maps_the_rows_in_key_order(tmp_path, rng):
    from clipsei.images.cache import open_matrix

    rows = rng.normal(size=(6, 8)).astype(np.float32)
    fields = {"name": "m", "weights_id": "w"}
    with EmbeddingCache(tmp_path, fields, flush_every=4) as cache:
        cache.add(list("abcdef"), list("abcdef"), [""] * 6, rows)
    matrix = EmbeddingCache(tmp_path, fields).write_matrix(list("fbd"), tmp_path / "m.npy")
    assert isinstance(matrix, np.memmap) and not matrix.flags.writeable
    np.testing.assert_array_equal(matrix, rows[[5, 1, 3]].astype(np.float16))
    np.testing.assert_array_equal(open_matrix(tmp_path / "m.npy"), matrix)
    assert [p.name for p in tmp_path.glob("*.npy")] == ["m.npy"]  # no temporary left


def test_write_matrix_and_open_matrix_errors(tmp_path, rng):
    from clipsei.images.cache import open_matrix

    fields = {"name": "m", "weights_id": "w"}
    with EmbeddingCache(tmp_path, fields) as cache:
        cache.add(["a"], ["a"], [""], rng.normal(size=(1, 4)))
    with pytest.raises(KeyError, match="'zz' is not in the cache"):
        cache.write_matrix(["a", "zz"], tmp_path / "m.npy")
    assert not (tmp_path / "m.npy").exists()
    (tmp_path / "taken.npy").write_bytes(b"user file")
    with pytest.raises(FileExistsError, match="never replaces"):
        cache.write_matrix(["a"], tmp_path / "taken.npy")
    assert (tmp_path / "taken.npy").read_bytes() == b"user file"
    np.save(tmp_path / "f32.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="2-D float16"):
        open_matrix(tmp_path / "f32.npy")
    with pytest.raises(FileNotFoundError, match="no embedding matrix"):
        open_matrix(tmp_path / "missing.npy")
