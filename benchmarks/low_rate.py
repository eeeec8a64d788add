"""The low-rate grid: detectors at the error rates curated datasets have (issue 15).

    python benchmarks/low_rate.py [--seeds 0,1,2] [--methods clipsei,cleanlab,aum]
                                  [--datasets cifar,pneumoniamnist,breastmnist]
                                  [--out FILE.json | --from-json FILE.json]

Rows: 10,000 CIFAR-10 images with clean labels (drawn once with seed 0 from cifar10n_dev),
PneumoniaMNIST and BreastMNIST (train + val + test, clean labels), each with symmetric and
confusion noise at 0.5%, 1% and 2%, and one row with nothing injected (its flags are the
flagged share: these sets' own few real errors make it nonzero). Per method: flags, F1 of
its own flags, F1 of the best cutoff on its own ranking, AUPRC, precision among the 10, 50
and 100 lowest scores; for methods with error probabilities their expected calibration error.

Writes docs/benchmarks.md (section "suite_low_rate") and docs/benchmarks_low_rate.json, and
leaves the main suite (run_suite.py) and its time unchanged.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402
from prepare import DEFAULT_DATA, DEFAULT_OUT, prepare_all  # noqa: E402
from run_suite import _confusions, _cost, _mean_std, _row, run_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOW_RATES = (0.005, 0.01, 0.02)
DATASETS = {"cifar": ("cifar10n_dev_aggre", 10000, "cifar10n_clean_10k"),
            "pneumoniamnist": ("pneumoniamnist", None, "pneumoniamnist"),
            "breastmnist": ("breastmnist", None, "breastmnist")}
COLUMNS = (("n_flagged", "flags", "{:.0f}"), ("f1", "F1", "{:.2f}"),
           ("best_f1", "best F1", "{:.2f}"), ("auprc", "AUPRC", "{:.2f}"),
           ("p_at_10", "P@10", "{:.2f}"), ("p_at_50", "P@50", "{:.2f}"),
           ("p_at_100", "P@100", "{:.2f}"), ("ece", "ECE", "{:.3f}"))


def build_low_rate_settings(datasets, seeds) -> list[dict]:
    """Per dataset: nothing injected, then symmetric and confusion noise at :data:`LOW_RATES`."""
    rows = []
    for key in datasets:
        stem, subsample, name = DATASETS[key]
        none = _row(stem, subsample, "symmetric", 0.0, seeds, name=name)
        rows.append({**none, "label": f"{name} · none injected"})
        rows += [_row(stem, subsample, noise, rate, seeds, name=name)
                 for noise in ("symmetric", "confusion") for rate in LOW_RATES]
    return rows


def summarise_low_rate(records, settings, methods) -> list[dict]:
    """Per row and method: mean and std over seeds of every column in :data:`COLUMNS`."""
    rows = []
    for setting in settings:
        runs = [r for r in records if r["row"] == setting["label"]]
        if not runs:
            continue
        row = {"label": setting["label"], "n": runs[0]["n"],
               "n_errors": float(np.mean([r["noise_rate"] * r["n"] for r in runs])),
               "methods": {}}
        for method in methods:
            mine = [r for r in runs if r["method"] == method]
            row["methods"][method] = {key: _mean_std([r.get(key) for r in mine])
                                      for key, _, _ in COLUMNS}
        rows.append(row)
    return rows


def _cell(value, fmt) -> str:
    mean, std = value
    if mean is None:
        return "—"
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def render_low_rate(summary, meta) -> str:
    """The markdown section: one table per method, then the command and machine."""
    lines = ["## Low error rates (issue 15)", "",
             "Injected symmetric and confusion noise at 0.5/1/2% and a row with nothing "
             "injected; mean ± std over the seeds. `best F1` is the F1 of the best single "
             "cutoff on the method's own ranking (what any count rule could reach); `P@k` the "
             "share of errors among the k lowest scores; `ECE` the expected calibration error "
             "of `error_probability` (10 equal-width bins). A `none injected` row has no known "
             "errors: its `flags` is what the method presents as findings on a clean set.", ""]
    for method in meta["methods"]:
        lines += [f"### {method}", "",
                  "| row | n | errors | " + " | ".join(t for _, t, _ in COLUMNS) + " |",
                  "|---|---:|---:|" + "---:|" * len(COLUMNS)]
        for row in summary:
            metrics = row["methods"][method]
            cells = [_cell(metrics[key], fmt) for key, _, fmt in COLUMNS]
            lines.append(f"| {row['label']} | {row['n']} | {row['n_errors']:.0f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Total time: {meta['total_seconds'] / 60:.1f} min in one process (a resumed "
              "run counts its last part only). Raw runs (with reliability bins): "
              "`docs/benchmarks_low_rate.json`.",
              "", f"Command: `{meta['command']}`", "", meta["machine"]]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def run_grid(settings, methods, *, out: Path, meta: dict, start: float) -> list[dict]:
    """Every row x seed x method in this process, smallest dataset first; each record is
    appended to ``out`` as it comes (a killed run keeps what it finished), and a rerun with
    the same ``out`` skips the tasks already there."""
    done = json.loads(out.read_text())["runs"] if out.is_file() else []
    finished = {(r["row"], r["seed"], r["method"]) for r in done}
    confusions = _confusions(settings, str(DEFAULT_OUT))
    tasks = sorted(((s, seed, m) for s in settings for seed in s["seeds"] for m in methods
                    if (s["label"], seed, m) not in finished), key=lambda t: _cost(t[0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    for number, (setting, seed, method) in enumerate(tasks, 1):
        record = run_task(setting, seed, method, str(DEFAULT_OUT),
                          confusions.get((setting["stem"], setting["subsample"])))
        done.append(record)
        meta["total_seconds"] = time.perf_counter() - start
        out.write_text(json.dumps({"meta": meta, "runs": done}, indent=1) + "\n")
        print(f"[{number}/{len(tasks)}] {setting['label']} seed {seed} {method}: "
              f"F1 {record.get('f1')} best {record.get('best_f1')}", file=sys.stderr, flush=True)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="clipsei,cleanlab,aum")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--out", default=None, help="write the JSON here and leave docs/ alone")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="no runs: write docs/ from the JSON of an earlier --out run")
    parser.add_argument("--note", default=None,
                        help="with --from-json: a line under the tables (e.g. what was run)")
    args = parser.parse_args(argv)
    if args.from_json:
        return _write_from_json(Path(args.from_json), note=args.note)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {list(DATASETS)}")
    start = time.perf_counter()
    prepare_all(args.data, DEFAULT_OUT)
    settings = build_low_rate_settings(datasets, seeds)
    arguments = argv if argv is not None else sys.argv[1:]
    meta = {"command": ("python benchmarks/low_rate.py " + " ".join(arguments)).strip(),
            "machine": machine_line(), "total_seconds": 0.0, "jobs": 1, "methods": methods,
            "settings": settings}
    out = Path(args.out) if args.out else ROOT / "docs" / "benchmarks_low_rate.json"
    records = run_grid(settings, methods, out=out, meta=meta, start=start)
    markdown = render_low_rate(summarise_low_rate(records, settings, methods), meta)
    if not args.out:
        write_section("suite_low_rate", markdown)
    print(markdown)
    return 0


def _write_from_json(path: Path, *, note=None) -> int:
    """Summarise the records of an earlier run into docs/ (the section and the JSON)."""
    saved = json.loads(path.read_text())
    meta = {**saved["meta"], **({"note": note} if note else {})}
    saved["meta"] = meta
    markdown = render_low_rate(summarise_low_rate(saved["runs"], meta["settings"],
                                                  meta["methods"]), meta)
    (ROOT / "docs" / "benchmarks_low_rate.json").write_text(json.dumps(saved, indent=1) + "\n")
    write_section("suite_low_rate", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
