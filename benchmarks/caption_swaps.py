"""Planted caption swaps: ``find_caption_issues`` against the plain pair-cosine baseline.

No pretrained CLIP weights can be installed here, so there are no real image-caption
embeddings to measure: real-CLIP figures could NOT be measured. This builds image-caption pairs
in one shared space from the shared CIFAR-10 features (``cifar10n_dev_effnetlite0.npz``, rows
0-9,999, clean labels; features centred on the mean of rows 10,000-19,999):

- ``zeroshot``: caption_i = unit(unit(class text of y_i) + unit(ImageNet-class row naming what
  image i shows among its class's ImageNet classes) + jitter), from
  ``cifar10_zeroshot_effnetlite0.npz`` (class names only, a weak text side);
- ``prototype``: caption_i = unit(unit(prototype of y_i) + jitter), the prototype being the
  mean centred feature of class y_i over rows 10,000-19,999 (clean labels), a stronger side.

The jitter is a Gaussian vector of norm ``JITTER``. A share of the captions (5%, 10%) is swapped
cyclically among randomly chosen pairs (about 1 in 10 swaps stays within a class); the truth is
every swapped pair. Settings were fixed before the first run and are not tuned.

Run: ``python benchmarks/caption_swaps.py [--data /work/shared/data] [--write]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

N_PAIRS = 10_000
JITTER = 0.5
RATES = (0.05, 0.10)
SEEDS = (0, 1)
VARIANTS = ("zeroshot", "prototype")


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def build_pairs(data_dir: Path, variant: str, seed: int) -> tuple:
    """(images (N, D), captions (N, D), labels (N,)) float32 pairs before any swap."""
    data = np.load(data_dir / "features" / "cifar10n_dev_effnetlite0.npz")
    features = data["features"].astype(np.float32)
    labels = data["clean_label"][:N_PAIRS]
    reference, reference_labels = features[N_PAIRS:], data["clean_label"][N_PAIRS:]
    centre = reference.mean(axis=0)
    images = _unit(features[:N_PAIRS] - centre)
    rng = np.random.default_rng(seed)
    if variant == "prototype":
        prototypes = np.stack([(reference[reference_labels == k] - centre).mean(axis=0)
                               for k in range(10)])
        base = _unit(prototypes)[labels]
    else:
        text = np.load(data_dir / "features" / "cifar10_zeroshot_effnetlite0.npz")
        weight = text["weight"]
        ids = [np.array(s.split(","), dtype=int) for s in text["imagenet_ids"]]
        shown = np.array([ids[y][np.argmax(weight[ids[y]] @ features[i])]
                          for i, y in enumerate(labels)])
        base = _unit(text["class_embeddings"])[labels] + _unit(weight[shown])
    jitter = rng.standard_normal(images.shape).astype(np.float32)
    captions = _unit(_unit(base) + JITTER * _unit(jitter))
    return images.astype(np.float32), captions.astype(np.float32), labels


def plant_swaps(captions: np.ndarray, rate: float, seed: int) -> tuple:
    """Swap the captions of ``rate * N`` random pairs cyclically -> (captions, swapped mask)."""
    rng = np.random.default_rng(1000 + seed)
    rows = rng.choice(len(captions), int(round(rate * len(captions))), replace=False)
    swapped = captions.copy()
    swapped[rows] = captions[np.roll(rows, 1)]
    mask = np.zeros(len(captions), bool)
    mask[rows] = True
    return swapped, mask


def _auroc(scores_low_bad: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, -scores_low_bad))


def run_one(data_dir: Path, variant: str, rate: float, seed: int) -> dict:
    """Metrics of the method and the pair-cosine baseline on one planted set."""
    from clipsei import find_caption_issues

    images, captions, labels = build_pairs(data_dir, variant, seed)
    noisy, truth = plant_swaps(captions, rate, seed)
    start = time.perf_counter()
    issues = find_caption_issues(images, noisy, random_state=seed)
    seconds = time.perf_counter() - start
    score, baseline = issues["caption_score"].to_numpy(), issues["pair_similarity"].to_numpy()
    n_true = int(truth.sum())
    flagged = issues["is_caption_issue"].to_numpy()
    suggested = issues["suggested_caption"].to_numpy()[truth]
    return {"auroc": _auroc(score, truth), "baseline_auroc": _auroc(baseline, truth),
            "precision_at_m": float(truth[np.argsort(score, kind="stable")[:n_true]].mean()),
            "baseline_precision_at_m": float(
                truth[np.argsort(baseline, kind="stable")[:n_true]].mean()),
            "precision": float(truth[flagged].mean()) if flagged.any() else float("nan"),
            "recall": float(flagged[truth].mean()), "n_flagged": int(flagged.sum()),
            "suggestion_right_class": float((labels[suggested] == labels[truth]).mean()),
            "image_neighbors_auroc": _auroc(issues["image_neighbor_agreement"].to_numpy(), truth),
            "text_neighbors_auroc": _auroc(issues["text_neighbor_agreement"].to_numpy(), truth),
            "estimated_rate": issues.attrs["estimated_mismatch_rate"],
            "seconds": seconds}


def render(rows: list, command: str) -> str:
    from _docs import machine_line

    lines = ["## Caption swaps: neighbours in both modalities vs pair cosine", "",
             "**Stand-in embeddings only: real-CLIP figures could not be measured here** (no "
             "pretrained CLIP weights can be installed). Pairs are built from the shared "
             f"CIFAR-10 features ({N_PAIRS:,} pairs; see the module docstring of "
             "`benchmarks/caption_swaps.py` for the two caption stand-ins); a share of "
             "captions is swapped cyclically among random pairs. `find_caption_issues` "
             "defaults (k = 10), mean over seeds "
             f"{', '.join(map(str, SEEDS))}. *m* = number of swaps; P@m = precision of the "
             "m lowest scores; precision / recall are those of `is_caption_issue` (the "
             "mixture cutoff); the baseline (pair cosine alone) has no cutoff of its own. "
             "'suggested ok' = share of swapped pairs whose suggested caption belongs to the "
             "image's true class. 'b alone' / 'c alone': AUROC of the image-neighbour / "
             "text-neighbour agreement on its own; 'est. rate': the estimated share of "
             "mismatched pairs that sets the count flagged.", "",
             f"Command: `{command}`  ", machine_line(), "",
             "| captions | swapped | AUROC (baseline) | P@m (baseline) | precision | recall "
             "| b alone | c alone | est. rate | suggested ok | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        m = row["metrics"]
        lines.append(
            f"| {row['variant']} | {row['rate']:.0%} | {m['auroc']:.3f} "
            f"({m['baseline_auroc']:.3f}) | {m['precision_at_m']:.3f} "
            f"({m['baseline_precision_at_m']:.3f}) | {m['precision']:.3f} | {m['recall']:.3f} "
            f"| {m['image_neighbors_auroc']:.3f} | {m['text_neighbors_auroc']:.3f} "
            f"| {m['estimated_rate']:.3f} | {m['suggestion_right_class']:.3f} "
            f"| {m['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="the shared data folder")
    parser.add_argument("--write", action="store_true",
                        help="write the caption_swaps section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = []
    for variant in VARIANTS:
        for rate in RATES:
            runs = [run_one(Path(args.data), variant, rate, seed) for seed in SEEDS]
            metrics = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
            rows.append({"variant": variant, "rate": rate, "metrics": metrics})
            print(variant, rate, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
    markdown = render(rows, "python benchmarks/caption_swaps.py --write")
    print(markdown)
    if args.write:
        from _docs import write_section

        write_section("caption_swaps", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
