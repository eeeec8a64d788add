"""Reliability of ``error_probability``: the default's (count rule) against the calibrated one.

    python benchmarks/reliability.py [--rows ROW ...] [--out docs/reliability.png] [--from-json]

A ROW is as in flag_rule_check.py (``stem:subsample:noise:rate:seed``; ``real`` = the file's
own human labels). Each row is fitted with ``cutoff="count"`` (the default: Bayes error
probabilities under confident learning's transitions, aligned to the label score) and
``cutoff="calibrated"`` (pseudo-error calibration) at the same seed. For each it writes the
reliability curve (mean probability against the share wrong, 10 equal-width bins) into one
PNG, one panel per row, and prints a markdown table of ECE and expected against true errors.
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
from flag_rule_check import load_row  # noqa: E402
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = ("cifar10n_dev_aggre:10000:real:0:0", "cifar10n_dev_random1:10000:real:0:0",
                "cifar10n_dev_worse:10000:real:0:0", "cifar10n_dev_aggre:10000:symmetric:0.01:0",
                "pneumoniamnist:0:symmetric:0.2:0")
RULES = ("count", "calibrated")


def run_row(row: str) -> dict:
    """Both rules' calibration metrics (ECE, expected errors, reliability bins) on one row."""
    from clipsei.engine.detect import find_label_issues
    from clipsei.evaluation.bench import compute_calibration_metrics

    features, given, clean, seed = load_row(row)
    is_error = given != clean
    record = {"row": row, "n": int(given.size), "n_errors": int(is_error.sum())}
    for rule in RULES:
        issues = find_label_issues(features, given, random_state=seed, cutoff=rule)
        record[rule] = compute_calibration_metrics(
            issues["error_probability"].to_numpy(float), is_error)
    return record


def plot(records, path: Path) -> None:
    """One reliability panel per row: both rules against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(3.2 * len(records), 3.4), squeeze=False)
    for ax, record in zip(axes[0], records):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        for rule, colour in zip(RULES, ("tab:red", "tab:blue")):
            bins = np.array(record[rule]["reliability"])
            ax.plot(bins[:, 0], bins[:, 1], "o-", color=colour, ms=3,
                    label=f"{rule} (ECE {record[rule]['ece']:.3f})")
        ax.set_title(record["row"].replace(":", " ").replace("cifar10n_dev_", ""), fontsize=8)
        ax.set_xlabel("error_probability (bin mean)", fontsize=8)
        ax.set_ylabel("share wrong", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(records) -> str:
    lines = ["| row | errors | ECE count | ECE calibrated | expected errors count | "
             "expected errors calibrated |", "|---|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['row']} | {r['n_errors']} | {r['count']['ece']:.3f} | "
                     f"{r['calibrated']['ece']:.3f} | {r['count']['expected_errors']:.0f} | "
                     f"{r['calibrated']['expected_errors']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reliability.png"),
                        help="the PNG (its records go next to it as .json)")
    parser.add_argument("--from-json", action="store_true",
                        help="no fits: plot the records an earlier run left next to --out")
    args = parser.parse_args(argv)
    if args.from_json:
        records = json.loads(Path(args.out).with_suffix(".json").read_text())
        plot(records, Path(args.out))
        print(render(records))
        return 0
    warnings.simplefilter("ignore")
    prepare_all(args.data, DEFAULT_OUT)
    records = []
    for row in args.rows:
        records.append(run_row(row))
        print(json.dumps({k: records[-1][k] for k in ("row", "n_errors")}), file=sys.stderr,
              flush=True)
        Path(args.out).with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    plot(records, Path(args.out))
    print(render(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
