"""Verified labels choose the flag count: F1 and its spread over random draws of them.

    python benchmarks/verified_check.py [--rates 0.005,0.01] [--seeds 0,1,2] [--per-class 16]
                                        [--noise symmetric|confusion|real]
                                        [--draws 10] [--out FILE.json]
                                        [--cache DIR] [--design uniform|audit]
    python benchmarks/verified_check.py --from-json FILE ...   (docs section verified_audit)

10,000 CIFAR-10 images with clean labels (drawn once with seed 0 from cifar10n_dev, as in
low_rate.py), symmetric or confusion noise injected at each rate and seed, or their own
human labels (CIFAR-10N aggre, about 9% wrong). Each row is fitted once with
the default (no verified rows); then ``--draws`` random sets of ``--per-class`` images per
class are "verified" (their clean label, so an injected error among them is a known error)
and :func:`clipsei.engine.verified.estimate_from_verified` keeps the default's flags or
chooses the count on the label-score order, as ``LabelIssueDetector().fit(...,
trusted={row: label})`` does (checked once against a second fit on the first row; where the
default's flags stand, the detector's count moves by the verified rows it leaves out). F1 is
over the unverified rows (and, with the known errors, over all rows). ``--design audit``
verifies an audit sample of the same size (:mod:`clipsei.engine.audit`), on which the error
probabilities are refitted and the count chosen (checked against the detector likewise).
Prints a markdown
table; ``--out`` also writes the records as JSON.
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

CIFAR = "cifar10n_dev_aggre"


def load_noisy_row(rate: float, seed: int, noise: str = "symmetric", stem: str = CIFAR):
    """(features, clean labels, given labels) of :func:`flag_rule_check.load_row`'s row:
    10,000 CIFAR-10 images (all of another ``stem``'s rows); ``noise`` "real" takes the
    file's human (CIFAR-10N aggre) labels (with ``rate`` > 0 a random share of their errors),
    else noise is injected at ``rate``."""
    features, given, clean, _ = load_row(
        f"{stem}:{10000 if stem == CIFAR else 0}:{noise}:{rate}:{seed}")
    return features, clean, given


def _draw_verified(clean, per_class: int, rng) -> dict:
    rows = np.concatenate([rng.choice(np.flatnonzero(clean == k), per_class, replace=False)
                           for k in np.unique(clean)])
    return {int(row): int(clean[row]) for row in rows}


def _f1(flags, is_error) -> float:
    return float(2 * (flags & is_error).sum() / max(flags.sum() + is_error.sum(), 1))


def _audit_draw(scores, is_error, budget: int, rng):
    """(flags, calibration, verified mask, known errors, {row: (is wrong, inclusion
    probability)}): an audit sample of ``budget`` rows (their clean label) and the flags
    :func:`clipsei.engine.flagging.flag_by_audit` chooses from it, as
    ``LabelIssueDetector().fit(..., trusted=...)`` flags with an audit."""
    from clipsei.engine.audit import draw_audit_sample
    from clipsei.engine.flag_choice import FlagChoice
    from clipsei.engine.flagging import flag_by_audit

    rows, probability = draw_audit_sample(scores, budget, random_state=rng)
    trusted = np.zeros(scores.size, dtype=bool)
    trusted[rows] = True
    inclusion = np.zeros(scores.size)
    inclusion[rows] = probability
    known = trusted & is_error
    count, calibration = flag_by_audit(scores, FlagChoice(
        trusted=trusted, known_errors=known, inclusion_probability=inclusion),
        rng=np.random.default_rng(0))
    kept = np.flatnonzero(~trusted)
    flags = np.zeros(scores.size, dtype=bool)
    flags[kept[np.lexsort((kept, scores[kept]))[:count]]] = True
    sheet = {int(row): (int(is_error[row]), float(p)) for row, p in zip(rows, probability)}
    return flags, calibration, trusted, known, sheet


def load_or_fit(features, given, *, noise: str, rate: float, seed: int, cache=None,
                stem: str = CIFAR) -> dict:
    """The default's fit of one row ({"keys": error_probability, "scores": label_score,
    "flags": is_label_issue}), from ``cache``'s ``fit_<tag>.npz`` where it is there, else
    fitted (and stored there)."""
    from clipsei.engine.detect import find_label_issues

    tag = f"{rate}_{seed}" if noise == "symmetric" else f"{noise}_{rate}_{seed}"
    tag = tag if stem == CIFAR else f"{stem}_{tag}"
    stored = None if cache is None else Path(cache) / f"fit_{tag}.npz"
    if stored is not None and stored.is_file():
        return dict(np.load(stored))
    issues = find_label_issues(features, given, random_state=seed)
    fit = {"keys": issues["error_probability"].to_numpy(float),
           "scores": issues["label_score"].to_numpy(float),
           "flags": issues["is_label_issue"].to_numpy(bool)}
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        np.savez(stored, **fit)
    return fit


def run_row(rate: float, seed: int, *, per_class: int, draws: int, check: bool,
            cache=None, noise: str = "symmetric", design: str = "uniform") -> dict:
    """One fit, then ``draws`` verified draws; per draw F1, estimated and true precision.
    ``design`` "audit" verifies a stratified audit sample of the same size instead."""
    from clipsei.engine.flagging import compute_class_cutoffs
    from clipsei.engine.verified import estimate_from_verified
    from clipsei.evaluation.bench import compute_best_cutoff_f1

    features, clean, given = load_noisy_row(rate, seed, noise)
    is_error = given != clean
    fit = load_or_fit(features, given, noise=noise, rate=rate, seed=seed, cache=cache)
    scores = fit["scores"]
    cutoffs = compute_class_cutoffs(scores, given, fit["flags"], n_classes=int(given.max()) + 1)
    record = {"noise": noise, "rate": rate, "seed": seed, "n_errors": int(is_error.sum()),
              "default_flags": int(fit["flags"].sum()),
              "default_f1": _f1(fit["flags"], is_error),
              "best_f1": compute_best_cutoff_f1(scores, is_error), "draws": []}
    rng = np.random.default_rng(1000 + seed)
    for draw in range(draws):
        if design == "audit":
            flags, calibration, trusted, known, sheet = _audit_draw(
                scores, is_error, per_class * (int(clean.max()) + 1), rng)
            estimate = calibration.estimate(flags)
            record["draws"].append(_draw_record(flags, estimate, trusted, known, is_error,
                                                scores))
            if check and draw == 0:
                # the sheet's labels: the clean label where the given one is wrong
                verified = {row: (int(clean[row]) if wrong else int(given[row]), p)
                            for row, (wrong, p) in sheet.items()}
                _check_detector(features, given, seed, verified, flags, record,
                                rest=~trusted, is_error=is_error)
            continue
        verified = _draw_verified(clean, per_class, rng)
        trusted = np.zeros(given.size, dtype=bool)
        trusted[list(verified)] = True
        known = trusted & (given != clean)
        # the default's flags without the verified rows, its cutoffs applied to them too
        would_flag = scores < cutoffs[given]
        estimate = estimate_from_verified(-scores, trusted, known, rng=np.random.default_rng(0),
                                          rule_flags=(would_flag & trusted) | fit["flags"])
        flags = fit["flags"] & ~trusted
        if estimate.chose_count:
            order = np.lexsort((np.arange(scores.size), scores, trusted))
            flags = np.zeros(given.size, dtype=bool)
            flags[order[:estimate.n_flagged]] = True
        rest = ~trusted
        record["draws"].append(_draw_record(flags, estimate, trusted, known, is_error,
                                            scores))
        if check and draw == 0:
            _check_detector(features, given, seed, verified, flags if estimate.chose_count
                            else None, record, rest=rest, is_error=is_error)
    return record


def _check_detector(features, given, seed, verified, flags, record, *, rest, is_error):
    """A second fit, by the detector with ``verified`` as ``trusted``: its F1 goes in the
    ``record``; where ``flags`` is given they must be the detector's."""
    from clipsei.engine.detect import LabelIssueDetector

    again = LabelIssueDetector(random_state=seed).fit(features, given, trusted=verified)
    found = again.issues_["is_label_issue"].to_numpy(bool)
    record["detector_check"] = {"chose_count": again.issues_.attrs["verified"]["chose_count"],
                                "f1": _f1(found[rest], is_error[rest])}
    if flags is not None and not np.array_equal(found, flags):
        raise RuntimeError("the detector's verified flags differ from the script's")


def _draw_record(flags, estimate, trusted, known, is_error, scores) -> dict:
    from clipsei.evaluation.bench import compute_best_cutoff_f1

    rest = ~trusted
    true_precision = float(is_error[flags].mean()) if flags.any() else None
    return {"n_flagged": estimate.n_flagged, "f1": _f1(flags[rest], is_error[rest]),
            "f1_with_known": _f1(flags | known, is_error),
            "best_f1_unverified": compute_best_cutoff_f1(scores[rest], is_error[rest]),
            "precision": estimate.precision,
            "precision_interval": estimate.precision_interval,
            "true_precision": true_precision, "n_errors": estimate.n_errors,
            "n_errors_interval": estimate.n_errors_interval,
            "true_errors": int(is_error[rest].sum()), "known_errors": int(known.sum()),
            "chose_count": estimate.chose_count}


def synthetic_coverage(rates, *, n_samples: int = 10000, n_verified: int = 160,
                       draws: int = 200) -> str:
    """Coverage of the 80% intervals on synthetic rankings (errors' keys ~ N(2.5, 1), clean
    ~ N(0, 1), ``n_verified`` rows verified at random, each draw a new set): a markdown table."""
    from clipsei.engine.verified import estimate_from_verified

    lines = ["| rate | draws | flags mean | precision in 80% interval | errors in 80% interval |",
             "|---:|---:|---:|---:|---:|"]
    for rate in rates:
        inside, flags = [], []
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            is_error = rng.random(n_samples) < rate
            keys = np.where(is_error, rng.normal(2.5, 1.0, n_samples),
                            rng.normal(0.0, 1.0, n_samples))
            trusted = np.zeros(n_samples, dtype=bool)
            trusted[rng.choice(n_samples, n_verified, replace=False)] = True
            estimate = estimate_from_verified(keys, trusted, trusted & is_error, rng=rng)
            if estimate is None or estimate.n_flagged == 0:
                continue
            order = np.lexsort((-keys, trusted))[:estimate.n_flagged]
            true_precision, true_errors = is_error[order].mean(), (is_error & ~trusted).sum()
            low, high = estimate.precision_interval
            errors_low, errors_high = estimate.n_errors_interval
            inside.append((low <= true_precision <= high, errors_low <= true_errors
                           <= errors_high))
            flags.append(estimate.n_flagged)
        share = np.mean(inside, axis=0)
        lines.append(f"| {rate:.3f} | {len(inside)} | {np.mean(flags):.0f} | {share[0]:.0%} | "
                     f"{share[1]:.0%} |")
    return "\n".join(lines)


def _spread(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})"


def render(records) -> str:
    lines = ["| noise | rate | seed | errors | default flags | default F1 | best-cutoff F1 | "
             "verified F1 mean (min-max) | best F1 on the unverified rows | F1 with the known "
             "errors (all rows) | flags mean | est. precision mean | true precision "
             "mean | precision in 80% interval | est. errors mean (true) | errors in 80% "
             "interval | verified chose |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in records:
        f1s = np.array([d["f1"] for d in r["draws"]])
        inside = np.mean([d["true_precision"] is not None and d["precision_interval"][0]
                          <= d["true_precision"] <= d["precision_interval"][1]
                          for d in r["draws"]])
        errors_inside = np.mean([d["n_errors_interval"][0] <= d["true_errors"]
                                 <= d["n_errors_interval"][1] for d in r["draws"]])
        true_p = [d["true_precision"] for d in r["draws"] if d["true_precision"] is not None]
        lines.append(
            f"| {r['noise']} | {r['rate']:.3f} | {r['seed']} | {r['n_errors']} | "
            f"{r['default_flags']} | "
            f"{r['default_f1']:.2f} | {r['best_f1']:.2f} | {f1s.mean():.2f} "
            f"({f1s.min():.2f}-{f1s.max():.2f}) | "
            f"{np.mean([d.get('best_f1_unverified', np.nan) for d in r['draws']]):.2f} | "
            f"{_spread([d.get('f1_with_known', np.nan) for d in r['draws']])} | "
            f"{np.mean([d['n_flagged'] for d in r['draws']]):.0f} | "
            f"{np.mean([d['precision'] for d in r['draws']]):.2f} | "
            f"{np.mean(true_p) if true_p else float('nan'):.2f} | {inside:.0%} | "
            f"{np.mean([d['n_errors'] for d in r['draws']]):.0f} "
            f"({np.mean([d['true_errors'] for d in r['draws']]):.0f}) | {errors_inside:.0%} | "
            f"{sum(d['chose_count'] for d in r['draws'])}/{len(r['draws'])} |")
    return "\n".join(lines)


def write_audit_section(files) -> None:
    """docs/benchmarks.md's ``verified_audit``: one table per design from --out JSON files
    (a file whose name holds "audit" is the audit design's)."""
    from _docs import machine_line, write_section

    tables = {}
    for name in files:
        design = "audit" if "audit" in Path(name).name else "uniform"
        tables.setdefault(design, []).extend(json.loads(Path(name).read_text()))
    text = ["Verified rows, 160 of 10,000 CIFAR-10 images, 20 draws per row: drawn uniformly "
            "(16 per class) or as an audit sample (`clipsei.engine.audit`, strata doubling "
            "in rank). \"F1 with the known errors\" scores the flags plus the verified rows "
            "found wrong against every error (the reviewer's 160 checks find errors too).", ""]
    for design in ("uniform", "audit"):
        if design in tables:
            text += [f"**{design}**", "", render(tables[design]), ""]
    text += ["Command: `python benchmarks/verified_check.py --design D --draws 20 --no-check "
             "--cache DIR --out D_sym.json` (seeds 0-2, rates 0.5% and 1%), `... --noise real "
             "--rates 0 --seeds 0`, `... --noise confusion --rates 0.2 --seeds 0`, for D = "
             "uniform and audit, then `--from-json FILES`.", "", machine_line()]
    write_section("verified_audit", "\n".join(text))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0.005,0.01")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--noise", default="symmetric",
                        choices=("symmetric", "confusion", "real"),
                        help="injected noise, or 'real': CIFAR-10N's human labels (rate unused)")
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--design", default="uniform", choices=("uniform", "audit"),
                        help="verified rows drawn uniformly per class, or an audit sample of "
                             "the same size stratified by rank (clipsei.engine.audit)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--no-check", action="store_true", help="skip the detector check")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=None, help="also write the records as JSON")
    parser.add_argument("--cache", default=None,
                        help="keep each fit's flag order here and reuse it (a folder)")
    parser.add_argument("--from-json", nargs="+", metavar="FILE", default=None,
                        help="only write docs/benchmarks.md's section 'verified_audit' from "
                             "--out files of earlier runs (named uniform or audit)")
    parser.add_argument("--synthetic", action="store_true",
                        help="only the intervals' coverage on synthetic rankings (at --rates)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.from_json:
        write_audit_section(args.from_json)
        return 0
    if args.synthetic:
        print(synthetic_coverage([float(r) for r in args.rates.split(",")], draws=args.draws))
        return 0
    prepare_all(args.data, DEFAULT_OUT)
    records = []
    for i, (rate, seed) in enumerate((float(r), int(s)) for r in args.rates.split(",")
                                     for s in args.seeds.split(",")):
        records.append(run_row(rate, seed, per_class=args.per_class, draws=args.draws,
                               check=i == 0 and not args.no_check, cache=args.cache,
                               noise=args.noise, design=args.design))
        print(json.dumps({k: v for k, v in records[-1].items() if k != "draws"}),
              file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    print(render(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
