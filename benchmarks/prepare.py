"""Convert the shared datasets (``../shared/data/features``) into bench ``.npz`` files.

    python benchmarks/prepare.py [--data ../shared/data] [--out bench_out/data]

Writes, as float32 features with int64 labels and the class names:

- ``breastmnist.npz``, ``pneumoniamnist.npz``: train + val + test pooled, clean labels;
- ``brain_mri.npz``: the 254 files, folder labels (duplicates kept, see the data README);
- ``cifar10n_dev_{aggre,random1,worse}.npz``: ``labels`` = the CIFAR-10N human label set,
  ``true_labels`` = the original CIFAR-10 label (real noise).

The output folder is git-ignored (``bench_out/``): the data is never copied into the repo,
and CIFAR-10N is CC BY-NC 4.0 (evaluation only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench_out" / "data"
DATASETS = ("breastmnist", "pneumoniamnist", "brain_mri", "cifar10n_dev")
CIFAR_LABEL_SETS = {"aggre": "aggre_label", "random1": "random_label1", "worse": "worse_label"}


def prepare_dataset(name: str, data_dir=DEFAULT_DATA) -> list[tuple[str, dict]]:
    """Return ``[(file stem, arrays)]`` for one shared dataset (three stems for CIFAR-10N)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}; got {name!r}")
    path = Path(data_dir) / "features" / f"{name}_effnetlite0.npz"
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        class_names = archive["classes"].astype(str)
        if name in ("breastmnist", "pneumoniamnist"):
            splits = ("train", "val", "test")
            features = np.concatenate([archive[f"{s}_features"] for s in splits])
            labels = np.concatenate([archive[f"{s}_labels"] for s in splits])
            return [(name, _arrays(features, labels, class_names))]
        if name == "brain_mri":
            return [(name, _arrays(archive["features"], archive["labels"], class_names))]
        features, clean = archive["features"], archive["clean_label"]
        return [(f"{name}_{short}", _arrays(features, archive[key], class_names, clean))
                for short, key in CIFAR_LABEL_SETS.items()]


def _arrays(features, labels, class_names, true_labels=None) -> dict:
    arrays = {"features": np.asarray(features, dtype=np.float32),
              "labels": np.asarray(labels, dtype=np.int64), "class_names": class_names}
    if true_labels is not None:
        arrays["true_labels"] = np.asarray(true_labels, dtype=np.int64)
    return arrays


def prepare_all(data_dir=DEFAULT_DATA, out_dir=DEFAULT_OUT, *, names=DATASETS) -> list[Path]:
    """Write every bench file that is missing or older than its source; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        source = Path(data_dir) / "features" / f"{name}_effnetlite0.npz"
        stems = [name] if name != "cifar10n_dev" else [f"{name}_{s}" for s in CIFAR_LABEL_SETS]
        targets = [out_dir / f"{stem}.npz" for stem in stems]
        fresh = source.is_file() and all(
            t.is_file() and t.stat().st_mtime >= source.stat().st_mtime for t in targets)
        if not fresh:
            for stem, arrays in prepare_dataset(name, data_dir):
                np.savez(out_dir / f"{stem}.npz", **arrays)
        written.extend(targets)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (git-ignored)")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated subset of {','.join(DATASETS)}")
    args = parser.parse_args(argv)
    names = tuple(n.strip() for n in args.datasets.split(",") if n.strip())
    for path in prepare_all(args.data, args.out, names=names):
        with np.load(path) as archive:
            extra = " (real noise)" if "true_labels" in archive.files else ""
            print(f"{path}: features {archive['features'].shape}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
