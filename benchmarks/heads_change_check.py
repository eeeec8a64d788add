"""Did a change of the heads move the default's results beyond seed noise?

Fits the default (``method="clipsei"``) on real rows, seeds 0, 1, 2, once with the code
imported from ``--old`` (a folder holding an older ``clipsei`` package, e.g. ``/work/main``
or a ``git archive`` of a commit) and once with this checkout's, each in its own process,
and prints AUROC and F1 as mean ± std per row for both, with the fit seconds.

Rows: CIFAR-10N aggre dev (20k x 1280, real human noise) and PneumoniaMNIST and BreastMNIST
with 20% injected symmetric noise (``bench_out/data``, see ``benchmarks/prepare.py``).

Run: ``python benchmarks/heads_change_check.py --old /work/main [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROWS = (("cifar10n_dev_aggre", "real", None), ("pneumoniamnist", "symmetric", 0.2),
        ("breastmnist", "symmetric", 0.2))
SEEDS = (0, 1, 2)


def _run_rows(data_dir: str) -> list[dict]:
    """Every row x seed with the ``clipsei`` on ``sys.path``; one record each."""
    from clipsei.evaluation.bench import load_bench_npz, run_bench

    records = []
    for stem, noise, rate in ROWS:
        data = load_bench_npz(Path(data_dir) / f"{stem}.npz")
        real = noise == "real"
        labels = data.labels if real or data.true_labels is None else data.true_labels
        for seed in SEEDS:
            result = run_bench(data.features, labels,
                               true_labels=data.true_labels if real else None,
                               noise=None if real else noise, rate=rate or 0.0, seed=seed,
                               methods=["clipsei"])
            metrics = result["methods"]["clipsei"]
            records.append({"row": stem, "seed": seed, **{k: metrics[k] for k in
                                                          ("auroc", "f1", "seconds")}})
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def _in_process(code: Path, data_dir: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, __file__, "--worker", "--data-dir", data_dir],
                         env=env, cwd=str(code), check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(records) -> dict:
    rows = {}
    for stem, _, _ in ROWS:
        runs = [r for r in records if r["row"] == stem]
        rows[stem] = {key: (float(np.mean([r[key] for r in runs])),
                            float(np.std([r[key] for r in runs], ddof=1)))
                      for key in ("auroc", "f1", "seconds")}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="folder with the old clipsei package, or the saved "
                        "stdout of a --worker run with it")
    parser.add_argument("--data-dir", default=str(ROOT / "bench_out" / "data"))
    parser.add_argument("--json", help="write both codes' records here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run_rows(args.data_dir)))
        return 0
    records = {"new": _in_process(ROOT, args.data_dir)}
    if args.old and args.old.endswith(".json"):  # an earlier --worker run's output
        records["old"] = json.loads(Path(args.old).read_text().strip().splitlines()[-1])
    elif args.old:
        records["old"] = _in_process(Path(args.old).resolve(), args.data_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    print("| row | code | AUROC | F1 | fit s |\n|---|---|---|---|---|")
    for code, runs in records.items():
        for stem, stats in _summary(runs).items():
            print(f"| {stem} | {code} | " + " | ".join(
                f"{stats[k][0]:.4f} ± {stats[k][1]:.4f}" for k in ("auroc", "f1"))
                + f" | {stats['seconds'][0]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
