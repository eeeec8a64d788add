"""Shared fixtures. Tests never reach the network and never see a GPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
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
    from clipsei.synthetic import make_noisy_blobs

    return make_noisy_blobs(200, n_classes=4, n_features=32, noise_rate=0.1, random_state=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
