"""CUDA paths give what the CPU gives: embeddings, head dynamics, the default detector, a scan.

Deselected by default and CUDA is hidden from the other tests (see ``conftest.py``). On a
machine with a GPU: ``CLIPSEI_TEST_GPU=1 python -m pytest -m gpu``. The GPU encodes images
under bf16 autocast and trains heads in fp32 with other kernels, so results agree closely,
not bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.filterwarnings("ignore:.*RANDOM weights"),
]


def test_auto_picks_cuda():
    from clipsei._device import resolve_device

    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def _tiny_model(device):
    from clipsei.images.embed import load_clip_model

    return load_clip_model("clipsei-tiny", "none", device=device)


def test_image_and_text_embeddings_match_cpu(image_folder):
    from clipsei.images.embed import embed_images, encode_texts

    cpu, gpu = _tiny_model("cpu"), _tiny_model("cuda")
    assert gpu.device.type == "cuda" and gpu.weights_id == cpu.weights_id
    on_cpu = embed_images(image_folder, cpu, batch_size=3, num_workers=0, progress=False)
    on_gpu = embed_images(image_folder, gpu, batch_size=3, num_workers=2, progress=False)
    assert on_gpu.embeddings.dtype == np.float32
    assert on_gpu.indices.tolist() == on_cpu.indices.tolist()
    np.testing.assert_allclose(np.linalg.norm(on_gpu.embeddings, axis=1), 1.0, rtol=1e-5)
    cosine = np.sum(on_cpu.embeddings * on_gpu.embeddings, axis=1)
    assert cosine.min() > 0.99, cosine
    texts = ["a photo of a cat", "a photo of a dog", "an image of something else"]
    text_cosine = np.sum(encode_texts(texts, cpu) * encode_texts(texts, gpu), axis=1)
    assert text_cosine.min() > 0.99, text_cosine


def _hard_blobs():
    """Overlapping classes, so probabilities are far from 0 and 1 and differences show."""
    from clipsei.evaluation.synthetic import make_noisy_blobs

    return make_noisy_blobs(600, n_classes=5, n_features=32, noise_rate=0.15,
                            cluster_std=1.2, random_state=0)


def test_head_dynamics_match_cpu():
    from clipsei.engine.heads import train_head

    data = _hard_blobs()
    runs = {device: train_head(data.embeddings, data.labels, n_classes=5,
                               class_embeddings=data.class_embeddings, n_epochs=8, batch_size=64,
                               device=device, random_state=0) for device in ("cpu", "cuda")}
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert 0.05 < cpu.mean_probs.max(axis=1).mean() < 0.99  # a test that can see differences
    np.testing.assert_allclose(gpu.mean_probs, cpu.mean_probs, atol=2e-3)
    np.testing.assert_allclose(gpu.entropy_history.astype(np.float32),
                               cpu.entropy_history.astype(np.float32), atol=5e-3)
    assert np.mean(gpu.agreement_history == cpu.agreement_history) > 0.99


def test_batched_heads_match_cpu():
    """The stacked heads of a cross-fitted round (uneven folds, a masked row) on CUDA."""
    from clipsei.engine.heads import train_crossfit_head

    data = _hard_blobs()
    mask = np.arange(data.labels.size) % 7 != 0
    runs = {device: train_crossfit_head(data.embeddings, data.labels, n_classes=5, n_folds=7,
                                        train_mask=mask, n_epochs=6, batch_size=64,
                                        device=device, random_state=0)
            for device in ("cpu", "cuda")}
    np.testing.assert_allclose(runs["cuda"].mean_probs, runs["cpu"].mean_probs, atol=2e-3)
    assert np.mean(runs["cuda"].agreement_history == runs["cpu"].agreement_history) > 0.99


def test_default_detector_on_cuda_ranks_like_cpu():
    from clipsei import LabelIssueDetector

    data = _hard_blobs()
    fits = {device: LabelIssueDetector(device=device, random_state=0).fit(
                data.embeddings, data.labels)
            for device in ("cpu", "cuda")}
    scores = {device: fit.issues_["label_score"].to_numpy() for device, fit in fits.items()}
    rank_cpu, rank_gpu = (np.argsort(np.argsort(scores[d])) for d in ("cpu", "cuda"))
    assert np.corrcoef(rank_cpu, rank_gpu)[0, 1] > 0.99
    auroc = {d: roc_auc_score(data.is_flipped, -s) for d, s in scores.items()}
    assert auroc["cuda"] > 0.8 and abs(auroc["cuda"] - auroc["cpu"]) < 0.01, auroc
    flagged = {d: set(np.flatnonzero(f.issues_["is_label_issue"])) for d, f in fits.items()}
    overlap = len(flagged["cpu"] & flagged["cuda"]) / len(flagged["cpu"] | flagged["cuda"])
    assert overlap > 0.9, overlap


def test_cli_scan_on_cuda(tmp_path, write_images, capsys):
    from clipsei.cli import main

    write_images(tmp_path / "images", n_per_class=6, classes=("cat", "dog"))
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "images"), "--model", "clipsei-tiny", "--pretrained",
                 "none", "--device", "cuda", "--out", str(out)]) == 0
    assert "scored 12 of 12 images" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["device"].startswith("cuda")
    assert summary["settings"]["detector"]["device"].startswith("cuda")
    assert (out / "report.html").is_file()
