"""Can a label-free score tell a human labelling error from a hard but correctly labelled image?

    python benchmarks/identifiability_check.py [--cache DIR] [--seed 0] [--rate 0.01]

10,000 CIFAR-10 images (drawn once with seed 0 from cifar10n_dev, as in low_rate.py and
verified_check.py) are fitted with the default three times: with their clean labels, with
CIFAR-10N's human "aggre" labels (about 9% wrong) and with symmetric noise injected at
``--rate``. Compared, on every numeric column of the issues table (label_score,
error_probability, the component scores, knn_agreement):

- across fits: (i) the images the clean fit flags (hard but correctly labelled), against
  (ii) aggre's real errors (as scored in the aggre fit) and (iii) the injected errors (as
  scored in the injected fit): AUROC of (i) against each (0.5 = the same distribution) and the
  two-sample KS statistic;
- within the aggre and injected fits: among the flagged rows, the AUROC of each column for
  telling the errors from the clean rows (what a flag rule on that column could still sort);
- how many of aggre's real errors fall on images the clean fit already flags.

- what a label-free count sees in each fit (rows with a low held-out given-label
  probability, the sum of error_probability) against the real number of errors.

Prints markdown tables; ``--cache`` keeps the three fits' columns (``fit_<name>.npz``);
``--write-docs`` writes them to docs/benchmarks.md (section ``identifiability_seed<seed>``).
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
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402
from verified_check import load_noisy_row  # noqa: E402

SKIP = ("given_label", "predicted_label", "suggested_label", "conflicting_duplicate")


def fit_columns(features, given, seed: int, stored) -> dict:
    """The default's issues table as name -> (N,) arrays (cached in ``stored`` if given)."""
    from clipsei.engine.detect import find_label_issues

    if stored is not None and stored.is_file():
        return dict(np.load(stored))
    issues = find_label_issues(features, given, random_state=seed)
    columns = {name: issues[name].to_numpy(np.float64) for name in issues.columns
               if name not in SKIP and np.issubdtype(issues[name].dtype, np.number)}
    columns["is_label_issue"] = issues["is_label_issue"].to_numpy(bool)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        np.savez(stored, **columns)
    return columns


def auroc(first, second) -> float:
    """P(a value of ``first`` > one of ``second``) + half the ties (Mann-Whitney)."""
    from scipy.stats import mannwhitneyu

    if len(first) == 0 or len(second) == 0:
        return float("nan")
    stat = mannwhitneyu(first, second, alternative="two-sided").statistic
    return float(stat / (len(first) * len(second)))


def across_fits(fits: dict, masks: dict) -> str:
    """(i) hard clean against (ii) real and (iii) injected errors, per column: all of them,
    and only those their own fit flags (at the same depth of the ranking as (i))."""
    from scipy.stats import ks_2samp

    hard = masks["hard_clean"]
    lines = ["| column | median (i) / (ii) / (iii) | AUROC (ii) vs (i) | KS (ii) vs (i) | "
             "AUROC (iii) vs (i) | KS (iii) vs (i) | AUROC flagged (ii) vs (i) | "
             "AUROC flagged (iii) vs (i) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(set(fits["clean"]) - {"is_label_issue", "rank"}):
        a = fits["clean"][name][hard]
        groups = []
        for fit, errors in (("aggre", masks["real_errors"]),
                            ("injected", masks["injected_errors"])):
            values = fits[fit][name]
            groups += [values[errors], values[errors & fits[fit]["is_label_issue"]]]
        a, (b, b_flagged, c, c_flagged) = a[np.isfinite(a)], (g[np.isfinite(g)] for g in groups)
        lines.append(f"| {name} | {np.median(a):.3f} / {np.median(b):.3f} / {np.median(c):.3f} "
                     f"| {auroc(b, a):.2f} | {ks_2samp(a, b).statistic:.2f} "
                     f"| {auroc(c, a):.2f} | {ks_2samp(a, c).statistic:.2f} "
                     f"| {auroc(b_flagged, a):.2f} | {auroc(c_flagged, a):.2f} |")
    return "\n".join(lines)


def label_free_counts(fits: dict, masks: dict) -> str:
    """What a label-free count sees in each fit: rows below a few held-out given-label
    probabilities, the sum of error_probability and the flags, against the real errors."""
    lines = ["| fit | real errors | held-out prob < 0.02 | < 0.05 | < 0.1 | sum of "
             "error_probability | flagged |", "|---|---:|---:|---:|---:|---:|---:|"]
    for fit, errors in (("clean", None), ("aggre", masks["real_errors"]),
                        ("injected", masks["injected_errors"])):
        held = fits[fit]["heldout_prob_score"]
        lines.append(f"| {fit} | {0 if errors is None else int(errors.sum())} | "
                     + " | ".join(str(int((held < t).sum())) for t in (0.02, 0.05, 0.1))
                     + f" | {fits[fit]['error_probability'].sum():.0f} | "
                     f"{int(fits[fit]['is_label_issue'].sum())} |")
    return "\n".join(lines)


def within_flags(fits: dict, masks: dict) -> str:
    """Among each fit's flagged rows, AUROC of each column for errors against clean rows."""
    lines = ["| column | aggre: AUROC errors vs clean among its flags | injected: same |",
             "|---|---:|---:|"]
    rows = {}
    for fit, errors in (("aggre", masks["real_errors"]), ("injected", masks["injected_errors"])):
        flagged = fits[fit]["is_label_issue"]
        for name in sorted(set(fits[fit]) - {"is_label_issue", "rank"}):
            values = fits[fit][name]
            keep = flagged & np.isfinite(values)
            rows.setdefault(name, []).append(auroc(values[keep & errors],
                                                   values[keep & ~errors]))
    for fit in ("aggre", "injected"):
        flagged = fits[fit]["is_label_issue"]
        errors = masks["real_errors" if fit == "aggre" else "injected_errors"]
        rows.setdefault("_counts", []).append(f"{int((flagged & errors).sum())} errors, "
                                              f"{int((flagged & ~errors).sum())} clean")
    lines.append(f"| (flagged rows) | {rows['_counts'][0]} | {rows['_counts'][1]} |")
    for name, (real, injected) in ((k, v) for k, v in rows.items() if k != "_counts"):
        lines.append(f"| {name} | {real:.2f} | {injected:.2f} |")
    return "\n".join(lines)


def overlap(fits: dict, masks: dict) -> str:
    """How many real errors the clean fit already flags, and the clean fit's label score as
    a predictor of where the human labellers erred."""
    hard = masks["hard_clean"]
    real = masks["real_errors"]
    injected = masks["injected_errors"]
    score = fits["clean"]["label_score"]
    return (f"Of aggre's {int(real.sum())} real errors, {int((real & hard).sum())} "
            f"({(real & hard).sum() / real.sum():.0%}) fall on the {int(hard.sum())} images "
            f"({hard.mean():.1%}) the clean-label fit flags; of the {int(injected.sum())} "
            f"injected errors, {int((injected & hard).sum())} "
            f"({(injected & hard).sum() / max(injected.sum(), 1):.0%}). AUROC of the clean-label "
            f"fit's label_score (low = hard) for where the human labellers erred: "
            f"{auroc(-score[real], -score[~real]):.2f}; for where the injected errors fell: "
            f"{auroc(-score[injected], -score[~injected]):.2f}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--cache", default=None, help="keep each fit's columns here (a folder)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the tables to docs/benchmarks.md (section per seed)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    prepare_all(args.data, DEFAULT_OUT)
    features, clean, real = load_noisy_row(0.0, args.seed, "real")
    injected = load_noisy_row(args.rate, args.seed, "symmetric")[2]
    cache = None if args.cache is None else Path(args.cache)
    fits = {}
    for name, given in (("clean", clean), ("aggre", real), ("injected", injected)):
        tag = f"{name}_{args.seed}" if name != "injected" else f"injected_{args.rate}_{args.seed}"
        fits[name] = fit_columns(features, given, args.seed,
                                 None if cache is None else cache / f"fit_{tag}.npz")
        print(f"fitted {name}", file=sys.stderr, flush=True)
    masks = {"hard_clean": fits["clean"]["is_label_issue"], "real_errors": real != clean,
             "injected_errors": injected != clean}
    markdown = "\n\n".join([across_fits(fits, masks), within_flags(fits, masks),
                             label_free_counts(fits, masks), overlap(fits, masks)])
    print(markdown)
    if args.write_docs:
        from _docs import machine_line, write_section

        command = ("python benchmarks/identifiability_check.py --seed "
                   f"{args.seed} --rate {args.rate} --write-docs")
        write_section(f"identifiability_seed{args.seed}", (
            f"## Hard clean images against real and injected errors (seed {args.seed})\n\n"
            "10,000 CIFAR-10 images fitted with the default three times: clean labels (i: the "
            "images it flags), CIFAR-10N aggre's human labels (ii: their real errors) and "
            f"{args.rate:.1%} symmetric noise (iii: the injected errors). AUROC > 0.5: the "
            "errors score higher than the hard clean images (see docs/design.md, issue 15 "
            f"item 3).\n\n{markdown}\n\n{machine_line()} Command: `{command}`"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
