"""The default's flag rule and the calibrated one on the same ranking: flags, F1, calibration.

    python benchmarks/flag_rule_check.py [--rows ROW ...] [--out FILE.json]

A ROW is ``stem:subsample:noise:rate:seed`` (``subsample`` 0 = all; ``noise`` ``real`` = the
file's own human labels, all of them with ``rate`` 0, else a random share of their errors
that leaves ``rate`` wrong; other noise is injected into the clean labels, ``rate`` 0 =
nothing injected), e.g. ``cifar10n_dev_aggre:10000:symmetric:0.005:0`` or
``cifar10n_dev_aggre:0:real:0:0``. Each row is fitted with the default method twice, with
``cutoff="count"`` (the default) and ``cutoff="calibrated"``, at the same seed: the label
scores are identical (checked), so AUROC is too and only the decision differs. Prints a
markdown table; ``--out`` also writes the records as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402

DEFAULT_ROWS = ("cifar10n_dev_aggre:10000:symmetric:0:0",
                "cifar10n_dev_aggre:10000:symmetric:0.005:0",
                "pneumoniamnist:0:symmetric:0:0", "pneumoniamnist:0:symmetric:0.01:0",
                "breastmnist:0:symmetric:0.02:0", "pneumoniamnist:0:confusion:0.2:0")


def load_row(row: str) -> tuple:
    """(features, given labels, clean labels, seed) of a ROW (see the module docstring)."""
    from clipsei.evaluation.bench import load_bench_npz
    from clipsei.evaluation.noise import (compute_confusion_matrix, inject_label_noise,
                                          keep_label_errors)

    stem, subsample, noise, rate, seed = row.split(":")
    data = load_bench_npz(DEFAULT_OUT / f"{stem}.npz")
    clean = data.true_labels if data.true_labels is not None else data.labels
    features, labels = data.features, data.labels
    if int(subsample):
        keep = np.sort(np.random.default_rng(0).choice(clean.size, int(subsample), replace=False))
        features, clean, labels = features[keep], clean[keep], labels[keep]
    if noise == "real":  # a rate keeps that share of the human errors, drawn with the seed
        given = (keep_label_errors(clean, labels, rate=float(rate), random_state=int(seed))
                 if float(rate) > 0 else labels.copy())
    else:
        confusion = compute_confusion_matrix(features, clean) if noise == "confusion" else None
        given = (inject_label_noise(clean, noise=noise, rate=float(rate), random_state=int(seed),
                                    confusion=confusion) if float(rate) > 0 else clean.copy())
    return features, given, clean, int(seed)


def run_row(row: str) -> dict:
    """Fit the default on one row under both flag rules."""
    from clipsei.engine.detect import find_label_issues
    from clipsei.evaluation.bench import compute_best_cutoff_f1, compute_calibration_metrics

    features, given, clean, seed = load_row(row)
    old = find_label_issues(features, given, random_state=seed, cutoff="count")
    new = find_label_issues(features, given, random_state=seed, cutoff="calibrated")
    if not np.array_equal(old["label_score"], new["label_score"]):
        raise RuntimeError(f"{row}: the two fits ranked differently")
    is_error = given != clean

    def f1(table):
        flags = table["is_label_issue"].to_numpy()
        total = flags.sum() + is_error.sum()
        return float(2 * (flags & is_error).sum() / total) if is_error.any() else None

    def ece(table):
        return compute_calibration_metrics(table["error_probability"].to_numpy(float),
                                           is_error)["ece"]

    return {"row": row, "n": int(given.size), "n_errors": int(is_error.sum()),
            "old_flags": int(old["is_label_issue"].sum()), "old_f1": f1(old),
            "new_flags": int(new["is_label_issue"].sum()), "new_f1": f1(new),
            "best_f1": (compute_best_cutoff_f1(new["label_score"].to_numpy(), is_error)
                        if is_error.any() else None),
            "old_ece": ece(old), "new_ece": ece(new),
            "expected_errors": float(new["error_probability"].sum()),
            "calibrated_error_rate": new.attrs["calibrated_error_rate"],
            "warnings": new.attrs["warnings"]}


def render(records) -> str:
    """A markdown table of the records."""
    def cell(value, fmt="{:.2f}"):
        return "—" if value is None else fmt.format(value)

    lines = ["| row | errors | count flags | count F1 | calibrated flags | calibrated F1 | "
             "best-cutoff F1 | calibrated / best | expected errors (calibrated) | "
             "ECE count | ECE calibrated |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        ratio = None if not r["best_f1"] else r["new_f1"] / r["best_f1"]
        lines.append(f"| {r['row']} | {r['n_errors']} | {r['old_flags']} | {cell(r['old_f1'])} | "
                     f"{r['new_flags']} | {cell(r['new_f1'])} | {cell(r['best_f1'])} | "
                     f"{cell(ratio)} | {r['expected_errors']:.0f} | {r['old_ece']:.3f} | "
                     f"{r['new_ece']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=None, help="also write the records as JSON")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    prepare_all(args.data, DEFAULT_OUT)
    records = []
    for row in args.rows:
        records.append(run_row(row))
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    print(render(records))
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
