"""Could an audit sample make ``error_probability`` mean what it says? (issue 15, item 2)

    python benchmarks/audit_calibration_check.py --cache DIR [--draws 20] [--budget 160]
                                                 [--write]

Exploratory: nothing here is in the detector. For the rows of ``verified_check.py`` (10,000
CIFAR-10 images, 0.5% and 1% symmetric noise at seeds 0-2, CIFAR-10N aggre, 20% confusion;
the same fit cache, ``fit_*.npz``, fitted with the default where missing) it draws
``--draws`` audit samples of ``--budget`` rows (:func:`clipsei.engine.audit.draw_audit_sample`),
refits the default's ``error_probability`` on them (a weighted logistic fit of "wrong" on its
log-odds, weights ``1 / inclusion probability``: two parameters) and compares the expected
calibration error (10 equal-width bins) and the expected number of errors (the sum of the
probabilities) with the default's.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402
from verified_check import _load_cifar, load_or_fit  # noqa: E402

from clipsei.evaluation.bench import compute_calibration_metrics  # noqa: E402

ROWS = ([("symmetric", 0.005, seed) for seed in (0, 1, 2)]
        + [("symmetric", 0.01, seed) for seed in (0, 1, 2)]
        + [("real", 0.0, 0), ("confusion", 0.2, 0)])


def recalibrate(error_probs, rows, is_error, inclusion_probability):
    """The default's probabilities refitted on an audit sample: sigmoid(a * logit(p) + b),
    ``a``, ``b`` from a weighted logistic fit on the audited ``rows``; None where the sample
    holds only one class."""
    from sklearn.linear_model import LogisticRegression

    if is_error[rows].min() == is_error[rows].max():
        return None
    clipped = np.clip(error_probs, 1e-4, 1 - 1e-4)
    log_odds = np.log(clipped / (1 - clipped))[:, None]
    model = LogisticRegression(C=1e4).fit(log_odds[rows], is_error[rows],
                                          sample_weight=1.0 / inclusion_probability)
    return model.predict_proba(log_odds)[:, 1]


def _fit(noise: str, rate: float, seed: int, cache: Path) -> tuple:
    features, clean, given = _load_cifar(rate, seed, noise)
    fit = load_or_fit(features, given, noise=noise, rate=rate, seed=seed, cache=cache)
    return fit["scores"], fit["keys"], (given != clean).astype(float)


def run_row(noise: str, rate: float, seed: int, *, cache: Path, draws: int, budget: int):
    """One row's line of the table."""
    from clipsei.engine.audit import draw_audit_sample

    scores, error_probs, is_error = _fit(noise, rate, seed, cache)
    eces, sums, skipped = [], [], 0
    for draw in range(draws):
        rows, probability = draw_audit_sample(scores, budget, random_state=draw)
        refitted = recalibrate(error_probs, rows, is_error, probability)
        if refitted is None:
            skipped += 1
            continue
        eces.append(compute_calibration_metrics(refitted, is_error)["ece"])
        sums.append(refitted.sum())
    label = "CIFAR-10N aggre (real)" if noise == "real" else f"{noise} {rate:g}, seed {seed}"
    return (f"| {label} | {int(is_error.sum())} | "
            f"{compute_calibration_metrics(error_probs, is_error)['ece']:.3f} | "
            f"{error_probs.sum():.0f} | "
            f"{np.mean(eces):.3f} ({np.min(eces):.3f}-{np.max(eces):.3f}) | "
            f"{np.mean(sums):.0f} ({np.min(sums):.0f}-{np.max(sums):.0f}) | {skipped} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="fit cache (fit_*.npz)")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args(argv)
    lines = [f"### Audit-refitted error probabilities ({args.budget} audited rows of 10,000 "
             f"CIFAR-10 images, {args.draws} draws; exploratory, not in the detector)", "",
             "| row | errors | default ECE | default expected errors | refitted ECE mean "
             "(min-max) | refitted expected errors mean (min-max) | draws with one class |",
             "|---|---:|---:|---:|---|---|---:|"]
    lines += [run_row(*row, cache=args.cache, draws=args.draws, budget=args.budget)
              for row in ROWS]
    lines += ["", f"Command: `python benchmarks/audit_calibration_check.py --cache DIR "
              f"--draws {args.draws} --budget {args.budget} --write`", "", machine_line()]
    print("\n".join(lines))
    if args.write:
        write_section("audit_calibration", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
