"""Does an ``.npz``'s optional ``text_features`` help or hurt the default detector?

``clipsei bench`` passes ``text_features`` (K, D) to the detector as class embeddings: the
in-sample heads start from them on the features as given (L2-normalised, not centred, as
CLIP's image-text space needs); the held-out heads and the neighbour search keep their
standardised features and ignore the text. No pretrained CLIP weights exist offline, so
real text embeddings cannot be measured here; this runs the default on the shared
features with two stand-ins beside none at all:

- ``prototypes``: each given label's mean unit feature (a text side aligned with the image
  space, as CLIP's is; built from the noisy labels, never the true ones);
- ``random``: Gaussian vectors (a text side unrelated to the images, e.g. a bad prompt).

Run: ``python benchmarks/text_features.py [--data bench_out/data] [--write]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (bench file, subsample size or None, injected noise or None for real labels, rate)
ROWS = (("cifar10n_dev_aggre", 10_000, None, None),
        ("cifar10n_dev_worse", 10_000, None, None),
        ("breastmnist", None, "confusion", 0.2))
VARIANTS = ("none", "prototypes", "random")


def _stand_ins(features, labels, n_classes: int, seed: int) -> dict:
    """Text-feature stand-ins, (K, D) float32 each (None for no text side)."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    prototypes = np.stack([unit[labels == k].mean(axis=0) for k in range(n_classes)])
    noise = np.random.default_rng(seed).standard_normal((n_classes, features.shape[1]))
    return {"none": None, "prototypes": prototypes.astype(np.float32),
            "random": noise.astype(np.float32)}


def run_row(data_dir: Path, stem: str, subsample, noise, rate, *, seed: int = 0) -> dict:
    """AUROC and F1 of the default per variant on one row."""
    from clipsei.evaluation.bench import load_bench_npz, run_bench
    from clipsei.evaluation.noise import compute_confusion_matrix, inject_label_noise

    data = load_bench_npz(data_dir / f"{stem}.npz")
    keep = (slice(None) if subsample is None else np.sort(
        np.random.default_rng(1).choice(data.labels.size, subsample, replace=False)))
    features, labels = data.features[keep], data.labels[keep]
    n_classes = int(labels.max()) + 1
    if noise is None:  # real noise: the stand-ins see the given labels only
        true_labels, given = data.true_labels[keep], labels
    else:
        true_labels = labels
        confusion = (compute_confusion_matrix(features, labels) if noise == "confusion"
                     else None)
        given = inject_label_noise(labels, noise=noise, rate=rate, random_state=seed,
                                   n_classes=n_classes, features=features, confusion=confusion)
    results = {}
    for name, text in _stand_ins(features, given, n_classes, seed).items():
        result = run_bench(features, given, true_labels=true_labels, seed=seed,
                           methods=["clipsei"], text_features=text)
        metrics = result["methods"]["clipsei"]
        results[name] = {"auroc": metrics["auroc"], "f1": metrics["f1"]}
    label = f"{stem}" + (f" ({subsample:,} images)" if subsample else "")
    label += f" · {noise} {rate:g}" if noise else " · real"
    return {"row": label, "n": int(given.size), "results": results}


def render(rows, command: str) -> str:
    from _docs import machine_line

    lines = ["## Text features: none vs stand-ins (`clipsei bench` with `text_features`)", "",
             "The default detector, seed 0, given no text side, class prototypes or random "
             "vectors as `text_features`. Stand-ins only: real CLIP text embeddings need "
             "pretrained weights, which cannot be downloaded here. The CIFAR-10N subsamples "
             "are drawn with `numpy.random.default_rng(1)`; BreastMNIST gets injected "
             "confusion noise.", "",
             f"Command: `{command}`  ", machine_line(), "",
             "| row | n | " + " | ".join(f"{v} AUROC / F1" for v in VARIANTS) + " |",
             "|---|---:|" + "---:|" * len(VARIANTS)]
    for row in rows:
        cells = [f"{row['results'][v]['auroc']:.3f} / {row['results'][v]['f1']:.3f}"
                 for v in VARIANTS]
        lines.append(f"| {row['row']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bench_out/data",
                        help="folder of bench .npz files (benchmarks/prepare.py writes them)")
    parser.add_argument("--write", action="store_true",
                        help="write the text_features section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    rows = []
    for stem, subsample, noise, rate in ROWS:
        row = run_row(Path(args.data), stem, subsample, noise, rate)
        rows.append(row)
        print(row["row"], {v: round(r["auroc"], 4) for v, r in row["results"].items()},
              {v: round(r["f1"], 4) for v, r in row["results"].items()}, flush=True)
    markdown = render(rows, "python benchmarks/text_features.py --write")
    print(markdown)
    if args.write:
        from _docs import write_section

        write_section("text_features", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
