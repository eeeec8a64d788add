"""Speed and memory of ``find_label_issues`` with its defaults at N=100k, D=512, K=10.

Everything the default does is included: the held-out heads' temperature search and
5-fold cross-fitting, both threshold-sample runs and the k=10 neighbour search (with
whatever index the default picks at this size). The data are clustered unit vectors with
local structure (see ``_clustered_embeddings``) and 10% flipped labels. The approximate
index's recall
against exact search is measured on a random subsample of queries.

Run: ``python benchmarks/score_speed.py [--n-samples 100000] [--device auto] [--write]``;
each device gets its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _clustered_embeddings(n_samples, n_features, n_classes, *, noise_rate, seed):
    """Unit vectors with local structure, as real embeddings have: each class holds 100
    sub-clusters (views, patients, scanners) around its centre. Returns (embeddings,
    given labels, flipped mask); ``noise_rate`` of the labels flipped to another class."""
    rng = np.random.default_rng(seed)
    class_centres = rng.normal(size=(n_classes, n_features))
    sub_centres = (np.repeat(class_centres, 100, axis=0)
                   + 0.8 * rng.normal(size=(n_classes * 100, n_features)))
    sub_cluster = rng.integers(0, n_classes * 100, n_samples)
    points = sub_centres[sub_cluster] + 0.6 * rng.normal(size=(n_samples, n_features))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    labels = sub_cluster // 100
    flipped = rng.random(n_samples) < noise_rate
    labels[flipped] = (labels[flipped] + rng.integers(1, n_classes, flipped.sum())) % n_classes
    return points, labels, flipped


def _recall_on_subsample(embeddings, neighbor_ids, *, n_queries: int, k: int, seed: int) -> float:
    """Recall@k of ``neighbor_ids`` against exact brute force on ``n_queries`` random rows."""
    rng = np.random.default_rng(seed)
    unit = (embeddings - embeddings.mean(axis=0)) / embeddings.std(axis=0)  # as the default does
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    queries = rng.choice(unit.shape[0], n_queries, replace=False)
    sims = unit[queries] @ unit.T
    sims[np.arange(n_queries), queries] = -np.inf
    exact = np.argpartition(-sims, k, axis=1)[:, :k]
    return float(np.mean([np.intersect1d(a, b).size / k
                          for a, b in zip(exact, neighbor_ids[queries])]))


def _timed_fit(detector_class, embeddings, labels, device):
    """(wall seconds, fitted detector) of the default detector with heads on ``device``."""
    start = time.perf_counter()
    detector = detector_class(device=device, random_state=0).fit(embeddings, labels)
    return time.perf_counter() - start, detector


def _baseline_line(embeddings, labels, flipped, seconds, auroc) -> str:
    """Same data, same run: 5-fold ``LogisticRegression(C=1)`` + ``cleanlab.filter``."""
    from sklearn.metrics import roc_auc_score

    from clipsei.evaluation.bench import score_cleanlab

    start = time.perf_counter()
    scores, flags = score_cleanlab(embeddings, labels, random_state=0, C=1.0)
    baseline_seconds = time.perf_counter() - start
    baseline_auroc = roc_auc_score(flipped, -scores)
    return (f"Baseline, same data and run: 5-fold LogisticRegression(C=1) + "
            f"cleanlab.filter.find_label_issues: wall {baseline_seconds:.1f} s, AUROC "
            f"{baseline_auroc:.3f}, {int(flags.sum())} flagged; baseline / clipsei wall-time "
            f"ratio {baseline_seconds / seconds:.2f} (clipsei AUROC {auroc:.3f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the 5-fold LogisticRegression + cleanlab baseline")
    args = parser.parse_args(argv)

    from clipsei._device import resolve_device
    from clipsei.engine.detect import LabelIssueDetector
    from clipsei.engine.neighbors import EXACT_MAX_SAMPLES

    embeddings, labels, flipped = _clustered_embeddings(
        args.n_samples, args.n_features, args.n_classes, noise_rate=0.1, seed=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    device = resolve_device(args.device)
    seconds, detector = _timed_fit(LabelIssueDetector, embeddings, labels, device)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    recall = _recall_on_subsample(embeddings, detector.neighbor_ids_, n_queries=1000,
                                  k=detector.n_neighbors, seed=0)
    from sklearn.metrics import roc_auc_score
    auroc = roc_auc_score(flipped, -detector.issues_["label_score"])
    search = detector.neighbor_search_
    index = ("exact IndexFlatIP" if args.n_samples <= EXACT_MAX_SAMPLES
             else f"IndexIVFScalarQuantizer (8-bit), n_probe {search['n_probe']}, its own "
                  f"recall estimate {search['recall_at_k']:.3f}")
    gpu_memory = ""
    if device.type == "cuda":
        import torch

        gpu_memory = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    lines = [
        f"N={args.n_samples} D={args.n_features} K={args.n_classes}, heads on {device}: "
        f"wall {seconds:.1f} s "
        f"(target <= 60 s), peak RSS {peak_gib:.2f} GiB (target <= 2 GiB; "
        f"{rss_before:.2f} GiB before fit: torch, the data and their generation){gpu_memory}, "
        f"neighbour index {index}, "
        f"recall@{detector.n_neighbors} vs exact on 1000 queries {recall:.3f}, "
        f"AUROC on the planted 10% flips {auroc:.3f}, "
        f"{int(detector.issues_['is_label_issue'].sum())} flagged of {int(flipped.sum())} flipped",
    ]
    if device.type != "cpu":  # the baseline, same data and machine, heads on the CPU
        cpu_seconds, cpu_detector = _timed_fit(LabelIssueDetector, embeddings, labels, "cpu")
        cpu_auroc = roc_auc_score(flipped, -cpu_detector.issues_["label_score"])
        lines.append(f"Same machine, heads on the CPU: wall {cpu_seconds:.1f} s, AUROC "
                     f"{cpu_auroc:.3f}; CPU / {device.type.upper()} wall-time ratio "
                     f"{cpu_seconds / seconds:.2f}")
    if not args.no_baseline:
        lines.append(_baseline_line(embeddings, labels, flipped, seconds, auroc))
    print("\n\n".join(lines))
    if args.write:
        from _docs import machine_line, write_section

        command = "python benchmarks/score_speed.py " + " ".join(argv or sys.argv[1:])
        name, title = (("score_speed", "") if device.type == "cpu"
                       else (f"score_speed_{device.type}", f", heads on {device.type.upper()}"))
        write_section(name, "\n".join([
            f"## Scoring speed (`find_label_issues` defaults{title})", "",
            f"Command: `{command.strip()}`  ", machine_line(str(device)), "",
            "\n\n".join(lines), ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
