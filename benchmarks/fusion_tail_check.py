"""Why AUM's AUPRC can beat the default's at low error rates: the fused score's tail.

    python benchmarks/fusion_tail_check.py [--rows ROW ...]

A ROW is as in flag_rule_check.py. Each row is fitted once with the default; from its issues
table it prints the AUPRC and precision among the 50 lowest (P@50) of the fused
``label_score``, of each fused component on its own, and of two other ways to combine the
same five components with the same weights: the mean of their *normal scores* (the
standard-normal quantile of each percentile, which keeps how far into the tail a sample is)
and their minimum percentile. Diagnostic only: it changes nothing in the default.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flag_rule_check import load_row  # noqa: E402
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402

COMPONENTS = ("heldout_margin_score", "pruned_heldout_margin_score", "aum_score",
              "knn_agreement", "bayes_label_prob_score")


def _metrics(scores, is_error) -> str:
    from sklearn.metrics import average_precision_score

    order = np.argsort(scores, kind="stable")
    return (f"{average_precision_score(is_error, -np.asarray(scores)):.2f} | "
            f"{is_error[order[:50]].mean():.2f}")


def run_row(row: str) -> list[str]:
    """Markdown lines: one per score of the row."""
    from scipy.stats import norm

    from clipsei.engine.detect import find_label_issues
    from clipsei.engine.fusion import FUSION_WEIGHTS
    from clipsei.engine.ranks import percentile_of

    features, given, clean, seed = load_row(row)
    is_error = given != clean
    issues = find_label_issues(features, given, random_state=seed)
    columns = [issues[c].to_numpy(np.float64) for c in COMPONENTS]
    percentiles = np.array([percentile_of(values, values) for values in columns])
    # the normal quantile needs (0, 1): half a rank in from either end
    inside = np.clip(percentiles, 0.5 / given.size, 1 - 0.5 / given.size)
    weights = np.asarray(FUSION_WEIGHTS, dtype=float)[:, None] / np.sum(FUSION_WEIGHTS)
    scores = {"label_score (fused, as shipped)": issues["label_score"].to_numpy(),
              **{c: issues[c].to_numpy() for c in COMPONENTS},
              "mean of percentiles (recomputed)": (weights * percentiles).sum(axis=0),
              "mean of normal scores": (weights * norm.ppf(inside)).sum(axis=0),
              "minimum percentile": percentiles.min(axis=0)}
    return [f"| {row} | {name} | {_metrics(s, is_error)} |" for name, s in scores.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=["cifar10n_dev_aggre:10000:symmetric:0.005:0"])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    prepare_all(args.data, DEFAULT_OUT)
    lines = ["| row | score | AUPRC | P@50 |", "|---|---|---:|---:|"]
    for row in args.rows:
        lines += run_row(row)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
