"""Speed and memory of ``find_label_issues`` with its defaults at N=100k, D=512, K=10.

Both threshold-sample runs per temperature and the k=10 neighbour search (with whatever
index the default picks at this size) are included. The approximate index's recall
against exact search is measured on a random subsample of queries.

Run: ``python benchmarks/score_speed.py [--n-samples 100000] [--write]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _recall_on_subsample(embeddings, neighbor_ids, *, n_queries: int, k: int, seed: int) -> float:
    """Recall@k of ``neighbor_ids`` against exact brute force on ``n_queries`` random rows."""
    rng = np.random.default_rng(seed)
    unit = embeddings - embeddings.mean(axis=0)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    queries = rng.choice(unit.shape[0], n_queries, replace=False)
    sims = unit[queries] @ unit.T
    sims[np.arange(n_queries), queries] = -np.inf
    exact = np.argpartition(-sims, k, axis=1)[:, :k]
    return float(np.mean([np.intersect1d(a, b).size / k
                          for a, b in zip(exact, neighbor_ids[queries])]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args(argv)

    from clipsei.detect import SEIDetector
    from clipsei.neighbors import EXACT_MAX_SAMPLES
    from clipsei.synthetic import make_noisy_blobs

    data = make_noisy_blobs(args.n_samples, n_classes=args.n_classes, n_features=args.n_features,
                            noise_rate=0.1, cluster_std=1.0, random_state=0)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    detector = SEIDetector(random_state=0).fit(data.embeddings, data.labels)
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    recall = _recall_on_subsample(data.embeddings, detector.neighbor_ids_, n_queries=1000,
                                  k=detector.n_neighbors, seed=0)
    from sklearn.metrics import roc_auc_score
    auroc = roc_auc_score(data.is_flipped, -detector.issues_["label_score"])
    index = "exact IndexFlatIP" if args.n_samples <= EXACT_MAX_SAMPLES else "IndexIVFFlat"
    lines = [
        f"N={args.n_samples} D={args.n_features} K={args.n_classes}: wall {seconds:.1f} s "
        f"(target <= 60 s), peak RSS {peak_gib:.2f} GiB (target <= 2 GiB; "
        f"{rss_before:.2f} GiB before fit, mostly torch), neighbour index {index}, "
        f"recall@{detector.n_neighbors} vs exact on 1000 queries {recall:.3f}, "
        f"AUROC on the planted 10% flips {auroc:.3f}",
    ]
    print("\n".join(lines))
    if args.write:
        from _docs import machine_line, write_section

        command = "python benchmarks/score_speed.py " + " ".join(argv or sys.argv[1:])
        write_section("score_speed", "\n".join([
            "## Scoring speed (`find_label_issues` defaults)", "",
            f"Command: `{command.strip()}`  ", machine_line(), "", *lines, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
