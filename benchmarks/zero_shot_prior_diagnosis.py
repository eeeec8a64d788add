"""Why the learned zero-shot prior gets no weight at 10,000 images, and when it does.

For each CIFAR-10N row the no-text default is fitted once (seed 0, first n images of
``cifar10n_dev``) and its signals are recorded as the engine passes them to the label scores.
Against its held-out class probabilities (what :mod:`clipsei.engine.prior` weighs the text
against) each text stand-in (weak zero-shot, class prototypes; see ``zero_shot_prior.py``) is
described by: its accuracy and the heads' on the clean labels; the share of images both get
wrong, against the share expected were their errors independent; the share learned from the
given labels; the share fitted to the *clean* labels (an oracle: what the text adds at best)
and the best AUROC change any fixed share of that oracle product gives (chosen on the clean
labels, so an upper bound for every weight learned from the given ones).
A simulated prior of the same clean accuracy whose errors are independent of the heads
(``softmax(T * (m * onehot(clean) + noise))``, as the issue's simulated prior) is then weighed
by the same code and mixed into the same fused scores, to show the learned weight counts
where the text knows what the labels cannot teach.

Run: ``nice -n 10 python benchmarks/zero_shot_prior_diagnosis.py [--sizes 10000,1000] [--write]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zero_shot_prior import DEFAULT_DATA, ROWS, load_stand_ins  # noqa: E402


@contextlib.contextmanager
def recording_signals():
    """Record the :class:`clipsei.engine.fusion.Signals` the default's decision step scores
    (the real function still runs); yields the list they are appended to."""
    from clipsei.engine import decide

    recorded, real = [], decide.compute_label_scores

    def record(signals, **kwargs):
        recorded.append(signals)
        return real(signals, **kwargs)

    decide.compute_label_scores = record
    try:
        yield recorded
    finally:
        decide.compute_label_scores = real


def simulated_log_probs(clean, accuracy: float, *, seed: int = 0) -> np.ndarray:
    """(N, K) "cosines" ``(m * onehot(clean) + noise) / 10`` with m set so that their argmax
    has ``accuracy`` on ``clean``: a text side whose errors are independent of the heads'."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(int(clean.max()) + 1)[clean]
    noise = rng.normal(size=onehot.shape)
    low, high = 0.0, 10.0
    for _ in range(40):  # bisection on m: accuracy rises with m
        m = (low + high) / 2
        low, high = ((m, high) if ((m * onehot + noise).argmax(1) == clean).mean() < accuracy
                     else (low, m))
    return (m * onehot + noise) / 10


def _auroc_with_prior(signals, prior, labels, is_error) -> float:
    from sklearn.metrics import roc_auc_score

    from clipsei.engine.fusion import FUSED, compute_label_scores

    scores = compute_label_scores(replace(signals, prior=prior), score=FUSED,
                                  n_classes=int(labels.max()) + 1).label_scores
    return float(roc_auc_score(is_error, -scores))


def diagnose(signals, x, labels, clean, text) -> dict:
    """The figures of one row and one text side (see the module docstring)."""
    from clipsei.engine.prior import (PriorWeight, ZeroShotPrior, _heldout_log_likelihoods,
                                      _stack_experts, fit_expert_weights, fit_prior_weight)
    from clipsei.engine.zero_shot import compute_zero_shot, fit_temperature, log_softmax

    is_error = labels != clean
    heads = signals.heldout.probs
    text_log_probs = compute_zero_shot(x, labels, text).log_probs
    text_wrong, heads_wrong = text_log_probs.argmax(1) != clean, heads.argmax(1) != clean
    learned = fit_prior_weight(heads, text_log_probs, labels, random_state=0)
    experts = _stack_experts(heads, text_log_probs)
    a, b = fit_expert_weights(experts, clean)
    oracle = _heldout_log_likelihoods(experts, labels, np.array([a, b]))
    best_oracle = max(_auroc_with_prior(signals, ZeroShotPrior(
        given_prob=None, temperature=1.0, weight=PriorWeight(a, b, share, 0.0, 0.0),
        product_log_prob=oracle), labels, is_error) for share in np.linspace(0.0, 0.6, 13))
    cosines = simulated_log_probs(clean, 1.0 - text_wrong.mean())
    sim_log_probs = log_softmax(fit_temperature(cosines, labels) * cosines)
    sim = fit_prior_weight(heads, sim_log_probs, labels, random_state=0)
    product = _heldout_log_likelihoods(_stack_experts(heads, sim_log_probs), labels,
                                       np.array([sim.default_weight, sim.text_weight]))
    prior = ZeroShotPrior(given_prob=np.exp(sim_log_probs[np.arange(labels.size), labels]),
                          temperature=1.0, weight=sim, product_log_prob=product)
    return {"text_accuracy": float(1 - text_wrong.mean()),
            "heads_accuracy": float(1 - heads_wrong.mean()),
            "both_wrong": float((text_wrong & heads_wrong).mean()),
            "both_wrong_if_independent": float(text_wrong.mean() * heads_wrong.mean()),
            "learned_share": learned.share, "gain": learned.heldout_gain, "se": learned.gain_se,
            "clean_share": float(b / (a + b)) if a + b > 0 else 0.0,
            "auroc_best_oracle": best_oracle,
            "simulated_share": sim.share,
            "simulated_both_wrong": float(((sim_log_probs.argmax(1) != clean)
                                           & heads_wrong).mean()),
            "auroc_none": _auroc_with_prior(signals, None, labels, is_error),
            "auroc_simulated": _auroc_with_prior(signals, prior, labels, is_error)}


def render(results: dict, command: str) -> str:
    from _docs import machine_line

    lines = ["## Why the zero-shot prior gets no weight at 10,000 images (diagnosis)", "",
             "No-text default (seed 0) on the first n images of `cifar10n_dev`; its held-out "
             "class probabilities against each text stand-in. `both wrong`: share of images "
             "the text and the heads both get wrong (clean labels), against the share expected "
             "were their errors independent. `share`: learned from the given labels (0 where "
             "the held-out gain is under two standard errors); `clean share`: fitted to the "
             "clean labels (oracle); `best oracle Δ`: the best AUROC change of any fixed "
             "share (0 to 0.6) of the oracle's product, chosen on the clean labels (an upper "
             "bound for any weight learned from the given ones). `simulated`: a prior of the "
             "same clean accuracy with errors independent of the heads, weighed by the same "
             "code and mixed into the same fused scores.", "",
             f"Command: `{command}`  ", machine_line(), "",
             "| n | row | text | text acc | heads acc | both wrong (indep.) | share (gain ± se) "
             "| clean share | best oracle Δ | simulated share | AUROC none -> simulated |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (n, row, name), r in results.items():
        lines.append(
            f"| {n:,} | {row} | {name} | {r['text_accuracy']:.3f} | {r['heads_accuracy']:.3f} "
            f"| {r['both_wrong']:.3f} ({r['both_wrong_if_independent']:.3f}) "
            f"| {r['learned_share']:.2f} ({r['gain']:+.5f} ± {r['se']:.5f}) "
            f"| {r['clean_share']:.2f} | {r['auroc_best_oracle'] - r['auroc_none']:+.4f} "
            f"| {r['simulated_share']:.2f} "
            f"| {r['auroc_none']:.4f} -> {r['auroc_simulated']:.4f} "
            f"({r['auroc_simulated'] - r['auroc_none']:+.4f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from clipsei import LabelIssueDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="10000,1000",
                        help="comma-separated numbers of images scored (first rows, <= 10000)")
    parser.add_argument("--write", action="store_true",
                        help="write the zero_shot_prior_diagnosis section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    if not all(0 < size <= 10_000 for size in sizes):
        parser.error(f"--sizes must be in [1, 10000]; got {args.sizes}")
    warnings.simplefilter("ignore")
    results = {}
    for size in sizes:
        data = load_stand_ins(args.data, size)
        for row, _ in ROWS:
            labels = data["labels"][row]
            with recording_signals() as recorded:
                LabelIssueDetector(random_state=0).fit(data["x"], labels)
            for name in ("weak", "prototypes"):
                results[size, row, name] = diagnose(recorded[-1], data["x"], labels,
                                                    data["clean"], data["texts"][name])
                print(size, row, name, results[size, row, name], flush=True)
    command = "nice -n 10 python benchmarks/zero_shot_prior_diagnosis.py" + (
        f" --sizes {args.sizes}" if args.sizes != "10000,1000" else "") + " --write"
    markdown = render(results, command)
    print(markdown)
    if args.write:
        from _docs import write_section

        write_section("zero_shot_prior_diagnosis", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
