"""Shared fixtures. Tests never reach the network, and see a GPU only when asked to.

``CLIPSEI_TEST_GPU=1 python -m pytest -m gpu`` runs the CUDA tests (``tests/test_gpu.py``)
on a machine with a GPU; without that variable CUDA is hidden, so ``device="auto"`` means
the CPU everywhere and results do not depend on the machine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("CLIPSEI_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _NoNetwork(socket.socket):
    def connect(self, address):  # pragma: no cover - only hit by a faulty test
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return super().connect(address)
        if isinstance(address, (str, bytes)):  # unix sockets (e.g. jupyter kernels)
            return super().connect(address)
        raise RuntimeError(f"tests must not use the network; tried to connect to {address!r}")


socket.socket = _NoNetwork


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; tests that need it skip cleanly where it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def blobs():
    """200 samples, 4 well-separated classes, 10% planted flips (seeded)."""
    from clipsei.evaluation.synthetic import make_noisy_blobs

    return make_noisy_blobs(200, n_classes=4, n_features=32, noise_rate=0.1, random_state=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- images -> embeddings (issue 4): the tiny real open_clip model and tiny image folders ---


@pytest.fixture(scope="session")
def tiny_clip():
    """The shipped ``clipsei-tiny`` open_clip model (random weights, ~1.6M parameters), on CPU."""
    from clipsei.images.embed import load_clip_model

    with pytest.warns(UserWarning, match="RANDOM weights"):
        return load_clip_model("clipsei-tiny", "none", device="cpu")


def write_tiny_images(folder: Path, n_per_class: int = 4, classes=("cat", "dog"), seed: int = 0):
    """Write ``n_per_class`` 24x20 PNG/JPEG images per class under ``folder/<class>/``.

    Modes cycle through RGB, L, P, RGBA and I;16 so decoding of each mode is exercised.
    Returns the written paths, sorted as ``load_image_table`` lists them.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            pixels[..., label % 3] = 255 - 40 * label  # classes differ in colour
            image = Image.fromarray(pixels)
            mode = ("RGB", "L", "P", "RGBA", "I;16")[i % 5]
            if mode == "I;16":
                image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 200)
            elif mode != "RGB":
                image = image.convert(mode)
            path = folder / name / f"img{i:02d}.{'jpg' if mode in ('RGB', 'L') else 'png'}"
            image.save(path)
            paths.append(str(path))
    return sorted(paths)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A two-class ImageFolder (cat, dog) of 4 tiny images each, mixed PIL modes."""
    write_tiny_images(tmp_path / "images")
    return tmp_path / "images"


@pytest.fixture
def write_images():
    """The ``write_tiny_images(folder, n_per_class=4, classes=("cat", "dog"), seed=0)`` helper."""
    return write_tiny_images
