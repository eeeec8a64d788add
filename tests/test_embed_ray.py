"""engine="ray": Ray Data decodes and encodes on a local 2-CPU Ray instance with the tiny model;
results, failures and the cache must be the local engine's. The tests that start Ray are
marked slow (``python -m pytest -m slow tests/test_embed_ray.py``) and skip without ray."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipsei.cli import main
from clipsei.images.embed import embed_images
from clipsei.pipeline import scan

FAST = {"n_epochs": 5}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module: 2 CPUs, no GPU, a small object store."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, num_gpus=0, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_folder(tmp_path, write_images):
    """10 images of each of 2 classes, one file that is not an image, one missing on disk."""
    folder = tmp_path / "images"
    write_images(folder, n_per_class=10)
    (folder / "cat" / "broken.png").write_bytes(b"not an image")
    return folder


def test_missing_ray_is_one_clear_error(monkeypatch, image_folder, tiny_clip, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'clipsei\[ray\]'"):
        embed_images(image_folder, tiny_clip, engine="ray", progress=False)
    assert main(["embed", str(image_folder), "--engine", "ray", "--model", "clipsei-tiny",
                 "--pretrained", "none", "--out", str(image_folder.parent / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].endswith("pip install 'clipsei[ray]'")


def test_unreachable_ray_address_fails_at_once_in_one_line(image_folder, capsys):
    import socket

    with socket.socket() as unused:  # a port nothing listens on once closed
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    out = image_folder.parent / "out"
    assert main(["scan", str(image_folder), "--engine", "ray", "--address", f"127.0.0.1:{port}",
                 "--model", "clipsei-tiny", "--pretrained", "none", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"clipsei scan: error: --address 127.0.0.1:{port}: no Ray cluster answers "
                     "there (Connection refused); check the address, or leave --address out to "
                     "start a local instance"]
    assert not out.exists()


def test_unknown_engine(image_folder, tiny_clip):
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'; got 'spark'"):
        embed_images(image_folder, tiny_clip, engine="spark")



_QUIET_DRIVER = """
import sys, warnings
warnings.simplefilter("ignore")
from ray.data._internal.execution.operators.map_operator import MapOperator
from clipsei.images.embed import embed_images, load_clip_model
model = load_clip_model("clipsei-tiny", "none", device="cpu")
# Ray Data warns when a stage's UDF, pickled with its constructor arguments, passes 100 MiB
# (a ViT-B-32 is 600 MB): the bound, scaled to the tiny model's 6 MB
assert MapOperator.MAP_UDF_WARN_SIZE_THRESHOLD >= 2**20
MapOperator.MAP_UDF_WARN_SIZE_THRESHOLD = 2**20
print(embed_images(sys.argv[1], model, engine="ray", batch_size=4, progress=False).n_encoded)
"""


@pytest.mark.slow  # a driver process that starts its own local Ray instance: ~30 s
def test_ray_run_on_a_new_local_instance_prints_no_ray_warnings(image_folder):
    """Neither Ray's token-authentication notice (RAY_AUTH_MODE unset) nor Ray Data's
    warning that the encoder stage carries the model inside its pickled UDF."""
    import subprocess

    pytest.importorskip("ray.data")
    env = {name: value for name, value in os.environ.items()
           if name not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    done = subprocess.run([sys.executable, "-c", _QUIET_DRIVER, str(image_folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["8"]
    assert "Token authentication" not in done.stderr
    assert "is too large" not in done.stderr


def _assert_same_embeddings(actual, expected):
    """Equal up to one float16 step (the cache's format): another batch composition can move
    the float32 result by ~1e-6 and round a value to the neighbouring float16."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2.0 ** -11)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.slow  # ray.init and a Ray run: ~30 s on 2 shared cores, mostly process starts
def test_ray_scan_matches_local_engine_and_its_cache_serves_local_runs(
        ray_local, ray_folder, tiny_clip, tmp_path):
    cache_dir, out = tmp_path / "cache", tmp_path / "ray_scan"
    # Ray Data's issue detector warns about actors that use more memory than they asked for
    detector = logging.getLogger("ray.data._internal.issue_detection.issue_detector_manager")
    issues = _Records()
    detector.addHandler(issues)
    try:
        assert main(["scan", str(ray_folder), "--engine", "ray", "--model", "clipsei-tiny",
                     "--pretrained", "none", "--batch-size", "4", "--cache", str(cache_dir),
                     "--n-epochs", "5", "--out", str(out), "-q"]) == 0
    finally:
        detector.removeHandler(issues)
    assert issues.messages == []
    local = embed_images(ray_folder, tiny_clip, batch_size=4, num_workers=0, progress=False)
    failures = pd.read_csv(out / "failures.csv")  # the unreadable file, as the local engine says
    assert failures["path"].tolist() == local.failures["path"].tolist()
    assert failures["reason"].tolist() == local.failures["reason"].tolist() != []
    # every embedding ray wrote to the cache is the local engine's, with the same extras
    cached = embed_images(ray_folder, tiny_clip, cache_dir=cache_dir, progress=False)
    assert (cached.n_cached, cached.n_encoded) == (20, 0)
    np.testing.assert_array_equal(cached.indices, local.indices)
    _assert_same_embeddings(cached.embeddings, local.embeddings)
    assert cached.content_hashes == local.content_hashes
    pd.testing.assert_frame_equal(cached.properties, local.properties)
    # a local scan of the readable images needs neither encoding nor the model's weights
    (ray_folder / "cat" / "broken.png").unlink()
    rescan = scan(ray_folder, model="clipsei-tiny", pretrained="none", cache_dir=cache_dir,
                  progress=False, **FAST)
    assert rescan.summary["settings"]["model_loaded"] is False
    ray_issues = pd.read_csv(out / "issues.csv")
    assert ray_issues["path"].tolist() == rescan.issues["path"].tolist()
    np.testing.assert_allclose(ray_issues["label_score"], rescan.issues["label_score"],
                               atol=1e-6)


def _descendants_named(text: str) -> list:
    """Pids of this process's descendants whose command line contains ``text``."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)

    def descends(pid: int) -> bool:
        while pid in parents and pid > 1:
            pid = parents[pid][0]
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, (_, cmdline) in parents.items() if text in cmdline and descends(pid)]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # one more Ray run (~15 s on 2 shared cores)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_killed_encoder_actor_is_restarted_and_its_work_redone(ray_local, ray_folder,
                                                                tiny_clip, tmp_path):
    """The last image is a FIFO: the run cannot end before the test writes to it, which it
    does only after it killed the encoder actor that had already embedded images."""
    image_bytes = (ray_folder / "dog" / "img00.jpg").read_bytes()
    fifo = ray_folder / "dog" / "zz_last.jpg"
    os.mkfifo(fifo)
    cache_dir, result = tmp_path / "cache", {}

    def run():
        result["ray"] = embed_images(ray_folder, tiny_clip, engine="ray", batch_size=2,
                                     cache_dir=cache_dir, flush_every=1, progress=False)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not list(cache_dir.glob("*/chunk-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = _descendants_named("_Encoder")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)  # a dying reader of the FIFO would swallow the bytes
    with open(fifo, "wb") as handle:  # releases the decode task waiting on the last image
        handle.write(image_bytes)
    thread.join(timeout=120)
    assert killed and not thread.is_alive()
    fifo.unlink()
    (ray_folder / "dog" / "zz_last.jpg").write_bytes(image_bytes)
    local = embed_images(ray_folder, tiny_clip, batch_size=2, num_workers=0, progress=False)
    np.testing.assert_array_equal(result["ray"].indices, local.indices)  # 21 read, none lost
    _assert_same_embeddings(result["ray"].embeddings, local.embeddings)


_DRIVER = """
import sys, warnings
warnings.simplefilter("ignore")
from clipsei.images.embed import embed_images, load_clip_model
model = load_clip_model("clipsei-tiny", "none", device="cpu")
embed_images(sys.argv[1], model, engine="ray", ray_address=sys.argv[2], cache_dir=sys.argv[3],
             batch_size=2, flush_seconds=1, progress=False)
"""


def _release(fifo: Path, data: bytes) -> None:
    """Feed ``data`` to a reader blocked on ``fifo``, if there is one."""
    try:
        handle = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no reader: nothing waits on it
        return
    with os.fdopen(handle, "wb") as writer:
        writer.write(data)


@pytest.mark.slow  # a driver process of its own (imports torch, starts an actor): ~30 s
def test_sigterm_to_a_ray_driver_keeps_its_work_and_the_rerun_resumes(
        ray_local, ray_folder, tiny_clip, tmp_path, write_images):
    """ray.init's own SIGTERM handler aborts the process; the cache's must win and flush."""
    import subprocess

    write_images(ray_folder, n_per_class=40, classes=("eel",), seed=1)
    image_bytes = (ray_folder / "dog" / "img00.jpg").read_bytes()
    fifo, cache_dir = ray_folder / "eel" / "zz_last.jpg", tmp_path / "cache"
    os.mkfifo(fifo)  # the last image: the run cannot end before the signal
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    address = ray_local.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(ray_folder), address,
                               str(cache_dir)], stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while (not list(cache_dir.glob("*/chunk-*.npz")) and driver.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=60)
    _release(fifo, image_bytes)
    assert b"KeyboardInterrupt" in stderr, stderr.decode()[-2000:]  # flushed on the way out
    fifo.unlink()
    fifo.write_bytes(image_bytes)
    resumed = embed_images(ray_folder, tiny_clip, cache_dir=cache_dir, progress=False)
    assert 0 < resumed.n_cached < 61 and resumed.n_cached + resumed.n_encoded == 61
    local = embed_images(ray_folder, tiny_clip, num_workers=0, progress=False)
    _assert_same_embeddings(resumed.embeddings, local.embeddings)
