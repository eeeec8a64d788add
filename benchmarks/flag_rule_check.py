"""The flag rule before and after issue 15, on the same fit: flags, F1, calibration.

    python benchmarks/flag_rule_check.py [--base 0fa9499] [--rows ROW ...] [--out FILE.json]

A ROW is ``stem:subsample:noise:rate:seed`` (``subsample`` 0 = all; ``rate`` 0 = nothing
injected), e.g. ``cifar10n_dev_aggre:10000:symmetric:0.005:0``. Each row is fitted once with
the default method; the old rule (``clipsei/engine/flagging.py`` at ``--base``: the larger of
confident learning's and the expected-F1 count on the uncalibrated Bayes probabilities) and
the new one (the expected-F1 count on the calibrated probabilities) flag the same label
scores, so the ranking, AUROC and AUPRC are identical and only the decision differs.
Prints a markdown table; ``--out`` also writes the records as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = ("cifar10n_dev_aggre:10000:symmetric:0:0",
                "cifar10n_dev_aggre:10000:symmetric:0.005:0",
                "pneumoniamnist:0:symmetric:0:0", "pneumoniamnist:0:symmetric:0.01:0",
                "breastmnist:0:symmetric:0.02:0", "pneumoniamnist:0:confusion:0.2:0")


def load_old_flagging(base: str):
    """The flagging module as it was at git revision ``base``, importable on its own."""
    source = subprocess.run(["git", "show", f"{base}:clipsei/engine/flagging.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("clipsei.engine._old_flagging")
    module.__dict__["__package__"] = "clipsei.engine"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{base}:flagging.py", "exec"), module.__dict__)
    return module


def run_row(row: str, old_flagging) -> dict:
    """Fit the default on one row and flag it with the old and the new rule."""
    from clipsei.engine.detect import LabelIssueDetector
    from clipsei.engine.fusion import compute_label_scores
    from clipsei.engine.noise_model import count_errors_per_class
    from clipsei.evaluation.bench import (compute_best_cutoff_f1, compute_calibration_metrics,
                                          load_bench_npz)
    from clipsei.evaluation.noise import compute_confusion_matrix, inject_label_noise

    stem, subsample, noise, rate, seed = row.split(":")
    data = load_bench_npz(DEFAULT_OUT / f"{stem}.npz")
    clean = data.true_labels if data.true_labels is not None else data.labels
    features = data.features
    if int(subsample):
        keep = np.sort(np.random.default_rng(0).choice(clean.size, int(subsample), replace=False))
        features, clean = features[keep], clean[keep]
    confusion = compute_confusion_matrix(features, clean) if noise == "confusion" else None
    given = (inject_label_noise(clean, noise=noise, rate=float(rate), random_state=int(seed),
                                confusion=confusion) if float(rate) > 0 else clean.copy())
    seen = {}

    class Recording(LabelIssueDetector):
        def _finish(self, spec, signals, *rest):
            seen["signals"] = signals
            return super()._finish(spec, signals, *rest)

    detector = Recording(random_state=int(seed)).fit(features, given)
    signals, table = seen["signals"], detector.issues_
    scores = compute_label_scores(signals, score="fused", n_classes=signals.votes.shape[1])
    old = old_flagging.flag_issues(
        scores.label_scores, given, n_classes=signals.votes.shape[1], rule="count",
        percentile=99.0, threshold_reference=scores.threshold_reference,
        threshold_scores=scores.threshold_scores,
        class_error_counts=count_errors_per_class(signals.pred_probs, given),
        error_probs=signals.error_probs)
    is_error = given != clean
    new_flags = table["is_label_issue"].to_numpy()
    new_probs = table["error_probability"].to_numpy(dtype=float)

    def f1(flags):
        total = flags.sum() + is_error.sum()
        return float(2 * (flags & is_error).sum() / total) if is_error.any() else None

    return {"row": row, "n": int(given.size), "n_errors": int(is_error.sum()),
            "old_flags": int(old.is_label_issue.sum()), "old_f1": f1(old.is_label_issue),
            "new_flags": int(new_flags.sum()), "new_f1": f1(new_flags),
            "best_f1": (compute_best_cutoff_f1(scores.label_scores, is_error)
                        if is_error.any() else None),
            "old_ece": compute_calibration_metrics(old.error_probability, is_error)["ece"],
            "new_ece": compute_calibration_metrics(new_probs, is_error)["ece"],
            "expected_errors": float(new_probs.sum()),
            "calibrated_error_rate": table.attrs["calibrated_error_rate"],
            "warnings": table.attrs["warnings"]}


def render(records) -> str:
    """A markdown table of the records."""
    def cell(value, fmt="{:.2f}"):
        return "—" if value is None else fmt.format(value)

    lines = ["| row | errors | old flags | old F1 | new flags | new F1 | best-cutoff F1 | "
             "new / best | expected errors | ECE old | ECE new |",
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
    parser.add_argument("--base", default="0fa9499", help="git revision of the old rule")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=None, help="also write the records as JSON")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    prepare_all(args.data, DEFAULT_OUT)
    old_flagging = load_old_flagging(args.base)
    records = []
    for row in args.rows:
        records.append(run_row(row, old_flagging))
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    print(render(records))
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
