"""Compare two suite runs row by row and write the "suite_change" section of docs/benchmarks.md.

    python benchmarks/compare_suite.py --before-rev REV \
        [--after docs/benchmarks_suite.json] [--write]

``--before-rev`` reads ``docs/benchmarks_suite.json`` as committed at git revision REV (the run
before a change); ``--after`` is the run after it. For each method in both runs and each
row, the table gives the mean AUROC and F1 over the seeds before and after, the change, and
whether the change is within seed noise: within the larger of the two sample standard
deviations over seeds (rows with fixed labels, such as CIFAR-10N, vary only the methods' own
randomness, so their spread is small and a change shows up sharply).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("auroc", "f1")


def load_runs(text: str) -> dict:
    """{(method, row): {metric: (N seeds,) values}} from a suite JSON text."""
    runs: dict = {}
    for record in json.loads(text)["runs"]:
        entry = runs.setdefault((record["method"], record["row"]), {m: [] for m in METRICS})
        for metric in METRICS:
            if record[metric] is not None:
                entry[metric].append(float(record[metric]))
    return runs


def compare(before: dict, after: dict, method: str) -> list[dict]:
    """One dict per row present in both runs for ``method``: means, stds, change, verdict."""
    rows = []
    for (name, row), values in after.items():
        if name != method or (method, row) not in before:
            continue
        entry = {"row": row}
        for metric in METRICS:
            old, new = np.asarray(before[(method, row)][metric]), np.asarray(values[metric])
            spread = max(_std(old), _std(new))
            change = new.mean() - old.mean()
            entry[metric] = (old.mean(), new.mean(), change, abs(change) <= spread + 5e-4)
        rows.append(entry)
    return sorted(rows, key=lambda entry: entry["row"])


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def format_table(rows: list[dict]) -> list[str]:
    lines = ["| row | AUROC before | after | change | F1 before | after | change |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for entry in rows:
        cells = []
        for metric in METRICS:
            old, new, change, same = entry[metric]
            mark = "" if same else " **moved**"
            cells += [f"{old:.3f}", f"{new:.3f}", f"{change:+.3f}{mark}"]
        lines.append(f"| {entry['row']} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", required=True, help="git revision of the earlier run")
    parser.add_argument("--after", default=str(ROOT / "docs" / "benchmarks_suite.json"))
    parser.add_argument("--methods", default="clipsei,sei_paper,aum,entropy_integral")
    parser.add_argument("--title", default="Suite before and after a change")
    parser.add_argument("--note", default="", help="a paragraph explaining the changes")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    before_text = subprocess.run(
        ["git", "show", f"{args.before_rev}:docs/benchmarks_suite.json"], cwd=ROOT,
        check=True, capture_output=True, text=True).stdout
    before, after = load_runs(before_text), load_runs(Path(args.after).read_text())
    command = "python benchmarks/compare_suite.py --before-rev " + args.before_rev
    lines = [f"## {args.title}", "",
             f"Command: `{command}` (after `python benchmarks/run_suite.py --jobs 2`).", "",
             "A change counts as within seed noise when it is at most the larger of the two "
             "runs' standard deviations over seeds (plus 0.0005 for rounding); "
             "**moved** marks the others.", ""] + ([args.note, ""] if args.note else [])
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        rows = compare(before, after, method)
        if not rows:
            continue
        moved = sum(not entry[m][3] for entry in rows for m in METRICS)
        mean = {m: np.mean([entry[m][2] for entry in rows]) for m in METRICS}
        lines += [f"### {method}", "",
                  f"{len(rows)} rows; {moved} of {2 * len(rows)} cells moved beyond seed noise; "
                  f"mean change AUROC {mean['auroc']:+.4f}, F1 {mean['f1']:+.4f}.", "",
                  *format_table(rows), ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("suite_change", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
