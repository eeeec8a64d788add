"""``clipsei demo``: an offline end-to-end run on scikit-learn's digits with planted label errors.

The 1,797 8x8 digit images are written as PNG files into ``out/images/<label>/``, a known
share of them under a wrong label. The folder is then read back like any user's folder and
scanned. No CLIP weights can ship offline, so the default features are the images' own
pixels (``features="pixels"``); ``features="clipsei-tiny"`` runs the bundled tiny open_clip
model instead, whose weights are random, to show the full image pipeline (it finds little).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ._paths import check_output_dir, mark_output_dir, output_kind
from ._validation import check_option, check_random_state

logger = logging.getLogger(__name__)

DEMO_FEATURES = ("pixels", "clipsei-tiny")
_CLASS_NAMES = ["0-zero", "1-one", "2-two", "3-three", "4-four", "5-five", "6-six", "7-seven",
                "8-eight", "9-nine"]  # folder names; sorted, they keep the digits' order
_IMAGE_SIZE = 32


def run_demo(out, *, features: str = "pixels", noise_rate: float = 0.1, random_state=0,
             progress: bool = False) -> dict:
    """Write the digits with planted errors under ``out``, scan them, save the scan there.

    Returns the figures the CLI prints: ``n_images``, ``n_injected``, ``n_flagged``,
    ``n_found`` (flagged and injected), ``precision``, ``recall``, ``features``, ``out``,
    ``report`` (the HTML path) and ``warnings`` (the scan's). ``out/truth.csv`` keeps the
    true label of every file. ``out`` must be missing, empty or an earlier demo's folder
    (whose images are replaced); any other folder is refused before anything is written.
    """
    check_option(features, DEMO_FEATURES, name="features")
    if not 0.0 < float(noise_rate) < 0.5:
        raise ValueError(f"noise_rate must be in (0, 0.5); got {noise_rate}")
    out = check_output_dir(out, option="out")
    _clear_previous_demo(out)
    mark_output_dir(out, kind="demo")
    truth, pixels = _plan_digits(out / "images", noise_rate, check_random_state(random_state))
    truth.to_csv(out / "truth.csv", index=False)  # first: lists an interrupted run's images too
    _write_digits(truth["path"], pixels)
    result = _scan_demo_folder(out, features, random_state, progress)
    is_injected = dict(zip(truth["path"], truth["is_injected"]))
    injected = result.issues["path"].map(is_injected).to_numpy(bool)
    flagged = result.issues["is_label_issue"].to_numpy(bool)
    n_found = int((injected & flagged).sum())
    return {"features": features, "n_images": len(truth), "n_injected": int(injected.sum()),
            "n_flagged": int(flagged.sum()), "n_found": n_found,
            "precision": n_found / max(int(flagged.sum()), 1),
            "recall": n_found / max(int(injected.sum()), 1),
            "out": str(out), "report": str(out / "report.html"),
            "warnings": list(result.summary.get("warnings", []))}


def _clear_previous_demo(out: Path) -> None:
    """Remove the images an earlier demo wrote into ``out``: the files its ``truth.csv``
    lists, then their emptied folders. Refuses, before removing anything, when ``images/``
    holds any other file (a user's) or ``out`` is not a demo's folder."""
    images = out / "images"
    if not images.exists():
        return
    written = set()
    if output_kind(out) == "demo" and (out / "truth.csv").is_file():
        written = {Path(path) for path in pd.read_csv(out / "truth.csv")["path"]}
    found = [path for path in images.rglob("*") if not path.is_dir()]
    foreign = [path for path in found if path.resolve() not in written]
    if foreign:
        raise ValueError(f"out {out} holds files in images/ that clipsei demo did not write "
                         f"(e.g. {foreign[0]}); choose another folder")
    for path in found:
        path.unlink()
    for folder in sorted((d for d in images.rglob("*") if d.is_dir()), reverse=True):
        folder.rmdir()
    images.rmdir()


def _plan_digits(folder: Path, noise_rate: float, rng: np.random.Generator):
    """The digits' truth table (path under ``folder``, given and true label, is_injected) and
    their (N, 8, 8) uint8 pixels; nothing is written."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    true_labels = digits.target.astype(np.int64)
    labels = true_labels.copy()
    flipped = rng.choice(labels.size, size=round(noise_rate * labels.size), replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, flipped.size)) % 10
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    paths = [str((folder / _CLASS_NAMES[label] / f"digit_{i:04d}.png").resolve())
             for i, label in enumerate(labels)]
    return pd.DataFrame({"path": paths, "given_label": np.asarray(_CLASS_NAMES)[labels],
                         "true_label": np.asarray(_CLASS_NAMES)[true_labels],
                         "is_injected": labels != true_labels}), pixels


def _write_digits(paths, pixels: np.ndarray) -> None:
    """Save each (8, 8) digit as a 32-px grey PNG at its path."""
    from PIL import Image

    for path, image in zip(map(Path, paths), pixels):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").resize((_IMAGE_SIZE, _IMAGE_SIZE),
                                                Image.Resampling.BILINEAR).save(path)
    logger.info("wrote %d digit images to %s", len(pixels), Path(paths[0]).parent.parent)


def _scan_demo_folder(out: Path, features: str, random_state, progress: bool):
    from .pipeline import scan, scan_embeddings

    if features == "clipsei-tiny":
        return scan(out / "images", model="clipsei-tiny", pretrained="none", out=out,
                    random_state=random_state, progress=progress)
    from .images.data import load_image, load_image_table

    table = load_image_table(out / "images")
    embeddings = _pixel_features(np.stack([np.asarray(load_image(p).convert("L")
                                                      .resize((8, 8))) for p in table.paths]))
    return scan_embeddings(embeddings, table.labels, paths=table.paths,
                           class_names=table.class_names, out=out, random_state=random_state)


def _pixel_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W) float32 pixels, centred on the mean image."""
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return flat - flat.mean(axis=0)
