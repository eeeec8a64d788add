"""Which shape should an audit refit of ``error_probability`` have? (issue 15, item 2)

    python benchmarks/audit_form_check.py --cache DIR [--draws 20] [--budget 160] [--write]

The CIFAR-10 rows of ``audit_calibration_check.py`` (10,000 images, 0.5% and 1% symmetric
noise at seeds 0-2, CIFAR-10N aggre, 20% confusion; the same fit cache). Each draw's audit
sample (:func:`clipsei.engine.audit.draw_audit_sample`) refits the probability of "wrong"
four ways, weighted by ``1 / inclusion probability``: a logistic fit on the default's
``error_probability`` log-odds (Platt scaling; flags in its order), on the raw label score,
on the log of the label score's rank (:func:`clipsei.engine.audit.compute_rank_feature`,
the detector's), and an isotonic fit on the label score. Each flags the expected-F1 count of
its order. Reported: F1 of the flags plus the audit's known errors (mean and worst draw) and
the ECE of the unverified rows.
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
from audit_calibration_check import CIFAR_ROWS, _label  # noqa: E402
from verified_check import load_noisy_row, load_or_fit  # noqa: E402

FORMS = ("Platt on the default's log-odds", "logistic on the label score",
         "logistic on the log rank (the detector's)", "isotonic on the label score")


def refit_forms(scores, error_probs, rows, is_error, weights) -> list:
    """(N,) refitted probabilities and (N,) flag keys (higher = flagged first) per form."""
    from scipy.special import expit, logit
    from sklearn.isotonic import IsotonicRegression

    from clipsei.engine.audit import compute_rank_feature, fit_error_model

    log_odds = logit(np.clip(error_probs, 1e-4, 1 - 1e-4))
    fitted = []
    for feature, keys in ((log_odds, log_odds), (scores, -scores),
                          (compute_rank_feature(scores), -scores)):
        slope, intercept = fit_error_model(feature[rows], is_error[rows], weights)
        fitted.append((expit(slope * feature + intercept), keys))
    isotonic = IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0,
                                  out_of_bounds="clip")
    isotonic.fit(scores[rows], is_error[rows].astype(float), sample_weight=weights)
    fitted.append((isotonic.predict(scores), -scores))
    return fitted


def run_row(stem, noise, rate, seed, *, cache: Path, draws: int, budget: int) -> str:
    """One row's line: per form, F1 mean (worst draw) and ECE."""
    from clipsei.engine.audit import draw_audit_sample
    from clipsei.engine.flagging import compute_expected_f1_count
    from clipsei.evaluation.bench import compute_calibration_metrics

    features, clean, given = load_noisy_row(rate, seed, noise, stem=stem)
    fit = load_or_fit(features, given, noise=noise, rate=rate, seed=seed, cache=cache,
                      stem=stem)
    scores, is_error = fit["scores"], given != clean
    rng = np.random.default_rng(2000 + seed)
    f1s, eces = np.zeros((draws, len(FORMS))), np.zeros((draws, len(FORMS)))
    for draw in range(draws):
        rows, probability = draw_audit_sample(scores, budget, random_state=rng)
        kept = np.setdiff1d(np.arange(scores.size), rows)
        known = np.zeros(scores.size, dtype=bool)
        known[rows] = is_error[rows]
        for form, (probs, keys) in enumerate(refit_forms(scores, fit["keys"], rows, is_error,
                                                         1.0 / probability)):
            order = kept[np.lexsort((kept, -keys[kept]))]
            count = compute_expected_f1_count(probs[order], np.arange(order.size))
            flags = known.copy()
            flags[order[:count]] = True
            f1s[draw, form] = 2 * (flags & is_error).sum() / (flags.sum() + is_error.sum())
            eces[draw, form] = compute_calibration_metrics(probs[kept], is_error[kept])["ece"]
    cells = [f"{f1s[:, k].mean():.2f} ({f1s[:, k].min():.2f}) / {eces[:, k].mean():.3f}"
             for k in range(len(FORMS))]
    return f"| {_label(stem, noise, rate, seed)} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="fit cache (fit_*.npz)")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args(argv)
    lines = [f"### The audit refit's shape ({args.budget} audited rows, {args.draws} draws "
             "per row)", "",
             "Per form: F1 of its flags plus the audit's known errors, mean (worst draw) / ECE "
             "of the unverified rows.", "",
             "| row | " + " | ".join(FORMS) + " |", "|---|" + "---|" * len(FORMS)]
    for row in CIFAR_ROWS:
        lines.append(run_row(*row, cache=args.cache, draws=args.draws, budget=args.budget))
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"Command: `python benchmarks/audit_form_check.py --cache DIR --draws "
              f"{args.draws} --budget {args.budget} --write`", "", machine_line()]
    print("\n".join(lines))
    if args.write:
        write_section("audit_form", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
