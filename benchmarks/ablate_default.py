"""Why the default detector is built as it is: AUROC of each of its parts, and of other ways
of combining them, on every suite row (seed 0), from one ``LabelIssueDetector`` fit per row.

    python benchmarks/ablate_default.py [--quick] [--write]

Parts: ``heldout`` (given-label margin of the held-out heads, integrated over epochs),
``pruned`` (the same from the second held-out round, which never trains on the first
round's suspects), ``aum`` (in-sample AUM of heads trained with threshold samples), ``knn``
(the neighbours' vote), ``bayes`` (the probability that the given label is right, by Bayes'
rule from the pruned heads' posterior and confident learning's noise transitions).
``default`` is ``label_score`` (percentile mean, weights ``FUSION_WEIGHTS``); ``first round``
picks the pruned round's suspects (``FIRST_ROUND_WEIGHTS``).
``heldout prob`` (not a part: the given label's held-out probability, which the margin
replaced) is shown beside them for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_suite import DEFAULT_DATA, DEFAULT_OUT, _confusions, _load, build_settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clipsei.engine.fusion import FUSION_WEIGHTS  # noqa: E402
from clipsei.engine.heldout import FIRST_ROUND_WEIGHTS  # noqa: E402


def _ratio(weights) -> str:
    return ":".join(f"{w:g}" for w in weights)


_HELDOUT, _AUM, _KNN = FIRST_ROUND_WEIGHTS
COMBINATIONS = {
    "heldout": (1, 0, 0, 0, 0), "pruned": (0, 1, 0, 0, 0), "aum": (0, 0, 1, 0, 0),
    "knn": (0, 0, 0, 1, 0), "bayes": (0, 0, 0, 0, 1), "heldout+pruned": (1, 1, 0, 0, 0),
    f"first round ({_ratio(FIRST_ROUND_WEIGHTS)})": (_HELDOUT, 0, _AUM, _KNN, 0),
    "1:1:1:1:1": (1, 1, 1, 1, 1), "3:3:2:2:2.5": (3, 3, 2, 2, 2.5),
    "without bayes (3:3:2:2)": (3, 3, 2, 2, 0),
    f"default ({_ratio(FUSION_WEIGHTS)})": FUSION_WEIGHTS,
}


def _percentile(values):
    from scipy.stats import rankdata

    return rankdata(values) / len(values)


def ablate_row(setting, data_dir, confusions) -> dict:
    """AUROC of every combination on one row (seed 0)."""
    from sklearn.metrics import roc_auc_score

    from clipsei.engine.detect import LabelIssueDetector
    from clipsei.evaluation.noise import inject_label_noise

    real = setting["noise"] == "real"
    features, labels, true_labels = _load(setting["stem"], setting["subsample"], real, data_dir)
    if not real:
        true_labels = labels
        labels = inject_label_noise(labels, noise=setting["noise"], rate=setting["rate"],
                                    random_state=0, features=features,
                                    confusion=confusions.get((setting["stem"],
                                                              setting["subsample"])))
    is_error = labels != true_labels
    issues = LabelIssueDetector(random_state=0).fit(features, labels).issues_
    parts = [_percentile(issues[column]) for column in
             ("heldout_margin_score", "pruned_heldout_margin_score", "aum_score", "knn_agreement",
              "bayes_label_prob_score")]
    result = {name: roc_auc_score(is_error, -np.average(parts, axis=0, weights=weights))
              for name, weights in COMBINATIONS.items()}
    result["heldout prob"] = roc_auc_score(is_error, -issues["heldout_prob_score"])
    result["heldout scale"] = issues.attrs["heldout_logit_scale"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args(argv)
    from prepare import prepare_all

    prepare_all(DEFAULT_DATA, DEFAULT_OUT)
    settings = build_settings(quick=args.quick)
    data_dir = str(DEFAULT_OUT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confusions = _confusions(settings, data_dir)
        start = time.perf_counter()
        rows = [(setting["label"], ablate_row(setting, data_dir, confusions))
                for setting in settings]
    header = "| row | " + " | ".join(COMBINATIONS) + " | heldout prob | held-out scale |"
    lines = [header, "|---|" + "---:|" * (len(COMBINATIONS) + 2)]
    for label, result in rows:
        best = max(result[name] for name in COMBINATIONS)
        cells = [f"**{result[name]:.3f}**" if result[name] == best else f"{result[name]:.3f}"
                 for name in COMBINATIONS]
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {result['heldout prob']:.3f} | {result['heldout scale']:g} |")
    means = {name: np.mean([result[name] for _, result in rows]) for name in COMBINATIONS}
    mean_cells = " | ".join(f"{means[name]:.3f}" for name in COMBINATIONS)
    mean_prob = np.mean([result["heldout prob"] for _, result in rows])
    lines.append(f"| **mean** | {mean_cells} | {mean_prob:.3f} | |")
    table = "\n".join(lines)
    print(table)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.write and not args.quick:
        from _docs import machine_line, write_section

        write_section("ablation", "\n".join([
            "## Why the default is built as it is (ablation, seed 0)", "",
            __doc__.split("\n\n")[2].replace("\n", " "), "",
            "Command: `python benchmarks/ablate_default.py --write`  ", machine_line(), "",
            "AUROC per row; the best combination of each row in bold.", "", table, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
