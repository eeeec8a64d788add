"""Does an audit sample make ``error_probability`` mean what it says? (issue 15, item 2)

    python benchmarks/audit_calibration_check.py --cache DIR [--draws 20] [--budget 160]
                                                 [--rows cifar|other|all] [--write]

Rows: 10,000 CIFAR-10 images (0.5% and 1% symmetric noise at seeds 0-2, CIFAR-10N aggre,
20% confusion: the rows of ``verified_check.py``, whose fit cache ``fit_*.npz`` it shares)
and, not used to choose the refit's form, PneumoniaMNIST (0.5/1/2% symmetric, 1% and 20%
confusion), BreastMNIST (2% symmetric, 20% confusion) and CIFAR-10N's human errors kept at
0.5/1/2% (:func:`clipsei.evaluation.noise.keep_label_errors`), seed 0. Each row is fitted once
with the default; ``--draws`` audit samples of ``--budget`` rows are drawn
(:func:`clipsei.engine.audit.draw_audit_sample`) and the error probabilities refitted on
each (:func:`clipsei.engine.audit.calibrate_on_audit`), the flags are its expected-F1 count
of the lowest scores (as the detector flags with an audit). Reported per row: the default's
ECE (10 equal-width bins) and expected errors; the refit's ECE and expected errors on the
unverified rows; F1 of the flags plus the audit's known errors against the best single
cutoff; and how often the 80% intervals of the flags' precision and of the error count
held the truth. ``--write`` also plots the pooled reliability curves
(docs/reliability_audit.png: bins of at least 30 rows).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402
from verified_check import CIFAR, _audit_draw, load_noisy_row, load_or_fit  # noqa: E402

from clipsei.evaluation.bench import compute_best_cutoff_f1, compute_calibration_metrics  # noqa: E402,E501

ROOT = Path(__file__).resolve().parents[1]
CIFAR_ROWS = ([(CIFAR, "symmetric", 0.005, seed) for seed in (0, 1, 2)]
              + [(CIFAR, "symmetric", 0.01, seed) for seed in (0, 1, 2)]
              + [(CIFAR, "real", 0.0, 0), (CIFAR, "confusion", 0.2, 0)])
OTHER_ROWS = ([("pneumoniamnist", "symmetric", rate, 0) for rate in (0.005, 0.01, 0.02)]
              + [("pneumoniamnist", "confusion", rate, 0) for rate in (0.01, 0.2)]
              + [("breastmnist", "symmetric", 0.02, 0), ("breastmnist", "confusion", 0.2, 0)]
              + [(CIFAR, "real", rate, 0) for rate in (0.005, 0.01, 0.02)])
N_BINS = 10
MIN_BIN_ROWS = 30  # a plotted bin's rows at least (pooled over the draws for the refit)


def run_row(stem: str, noise: str, rate: float, seed: int, *, cache: Path, draws: int,
            budget: int) -> dict:
    """One row: the default's calibration, then ``draws`` audits' refits."""
    features, clean, given = load_noisy_row(rate, seed, noise, stem=stem)
    fit = load_or_fit(features, given, noise=noise, rate=rate, seed=seed, cache=cache,
                      stem=stem)
    scores, is_error = fit["scores"], given != clean
    default = compute_calibration_metrics(fit["keys"], is_error, n_bins=N_BINS)
    record = {"row": _label(stem, noise, rate, seed), "held_out": stem != CIFAR,
              "n": int(is_error.size),
              "errors": int(is_error.sum()), "default_ece": default["ece"],
              "default_expected": default["expected_errors"],
              "best_f1": compute_best_cutoff_f1(scores, is_error),
              "default_f1": float(2 * (fit["flags"] & is_error).sum()
                                  / max(fit["flags"].sum() + is_error.sum(), 1)), "draws": [],
              "pooled": np.zeros((N_BINS, 3)), "default_bins": default["reliability"]}
    rng = np.random.default_rng(2000 + seed)
    for _ in range(draws):
        flags, calibration, audited, known, _sheet = _audit_draw(scores, is_error, budget,
                                                                 rng)
        estimate, probs, rest = calibration.estimate(flags), calibration.error_probs, ~audited
        metrics = compute_calibration_metrics(probs[rest], is_error[rest], n_bins=N_BINS)
        bins = np.minimum((probs[rest] * N_BINS).astype(int), N_BINS - 1)
        np.add.at(record["pooled"], bins, np.c_[probs[rest], is_error[rest],
                                                np.ones(rest.sum())])
        true_precision = float(is_error[flags].mean()) if flags.any() else 0.0
        low, high = estimate.precision_interval
        errors_low, errors_high = estimate.n_errors_interval
        true_errors = int(is_error[rest].sum())
        record["draws"].append({
            "ece": metrics["ece"], "expected": estimate.n_errors, "true_errors": true_errors,
            "f1": float(2 * ((flags | known) & is_error).sum()
                        / max((flags | known).sum() + is_error.sum(), 1)),
            "precision": estimate.precision, "true_precision": true_precision,
            "precision_held": bool(low <= true_precision <= high) if flags.any() else None,
            "errors_held": bool(errors_low <= true_errors <= errors_high)})
    return record


def _label(stem: str, noise: str, rate: float, seed: int) -> str:
    name = {"cifar10n_dev_aggre": "CIFAR-10 10k"}.get(stem, stem)
    if noise == "real":
        return f"{name} · CIFAR-10N aggre (real" + (f", {rate:g} kept)" if rate else ")")
    return f"{name} · {noise} {rate:g}, seed {seed}"


def render(records, *, draws: int, budget: int) -> str:
    lines = [f"### Error probabilities refitted on an audit sample ({budget} audited rows, "
             f"{draws} draws per row)", "",
             "ECE: 10 equal-width bins (the refit's over the unverified rows). Expected errors: "
             "the probabilities' sum (the refit's over the unverified rows, against the true "
             "count there). Default F1: the default's flags, no audit. F1: the refit's flags "
             "plus the errors the audit found, against all errors. Held: how often the 80% "
             "interval held the truth. Rows below the line were not used to choose the refit's "
             "form.", "",
             "| row | n | errors | default ECE | default expected errors | refit ECE mean "
             "(max) | refit expected errors mean (min-max) / true | default F1 | F1 mean (min) | "
             "best-cutoff F1 | precision est. / true | precision held | errors held |",
             "|---|---:|---:|---:|---:|---|---|---:|---|---:|---|---:|---:|"]
    for index, record in enumerate(records):
        if record["held_out"] and (index == 0 or not records[index - 1]["held_out"]):
            lines.append("| *held out* | | | | | | | | | | | | |")
        draws_ = record["draws"]
        column = {key: np.array([d[key] for d in draws_], dtype=float)
                  for key in ("ece", "expected", "true_errors", "f1", "precision",
                              "true_precision")}
        held = [d["precision_held"] for d in draws_ if d["precision_held"] is not None]
        lines.append(
            f"| {record['row']} | {record['n']:,} | {record['errors']} | "
            f"{record['default_ece']:.3f} | {record['default_expected']:.0f} | "
            f"{column['ece'].mean():.3f} ({column['ece'].max():.3f}) | "
            f"{column['expected'].mean():.0f} ({column['expected'].min():.0f}-"
            f"{column['expected'].max():.0f}) / {column['true_errors'].mean():.0f} | "
            f"{record['default_f1']:.2f} | {column['f1'].mean():.2f} "
            f"({column['f1'].min():.2f}) | {record['best_f1']:.2f} | "
            f"{column['precision'].mean():.2f} / {column['true_precision'].mean():.2f} | "
            f"{np.mean(held) if held else float('nan'):.0%} | "
            f"{np.mean([d['errors_held'] for d in draws_]):.0%} |")
    return "\n".join(lines)


def plot(records, path: Path) -> None:
    """Reliability curves pooled over the draws: refitted against default, one panel a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = -(-len(records) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for axis, record in zip(axes.flat, records):
        pooled = np.asarray(record["pooled"])
        seen = pooled[:, 2] >= MIN_BIN_ROWS
        axis.plot([0, 1], [0, 1], color="0.7", lw=1)
        axis.plot(pooled[seen, 0] / pooled[seen, 2], pooled[seen, 1] / pooled[seen, 2], "o-",
                  label="refitted on the audit")
        default = np.array(record["default_bins"])
        default = default[default[:, 2] >= MIN_BIN_ROWS]
        axis.plot(default[:, 0], default[:, 1], "s--", label="default (label-free)")
        axis.set_title(record["row"], fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
    for axis in list(axes.flat)[len(records):]:
        axis.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("mean error_probability in the bin")
    fig.supylabel("share wrong")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="fit cache (fit_*.npz)")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--rows", choices=("cifar", "other", "all"), default="all")
    parser.add_argument("--write", action="store_true",
                        help="record in docs/benchmarks.md and plot docs/reliability_audit.png")
    parser.add_argument("--out", type=Path, default=None, help="also write the records (JSON)")
    args = parser.parse_args(argv)
    rows = {"cifar": CIFAR_ROWS, "other": OTHER_ROWS, "all": CIFAR_ROWS + OTHER_ROWS}[args.rows]
    records = []
    for row in rows:
        records.append(run_row(*row, cache=args.cache, draws=args.draws, budget=args.budget))
        print(render(records[-1:], draws=args.draws, budget=args.budget).splitlines()[-1],
              file=sys.stderr, flush=True)
    text = "\n".join([
        render(records, draws=args.draws, budget=args.budget), "",
        f"Command: `python benchmarks/audit_calibration_check.py --cache DIR --draws "
        f"{args.draws} --budget {args.budget} --rows {args.rows} --write` (plot: "
        "docs/reliability_audit.png)", "", machine_line()])
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(
            [{**r, "pooled": np.asarray(r["pooled"]).tolist()} for r in records]) + "\n")
    if args.write:
        write_section("audit_calibration", text)
        plot(records, ROOT / "docs" / "reliability_audit.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
