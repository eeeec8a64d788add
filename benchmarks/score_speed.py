"""Speed and memory of ``find_label_issues`` with its defaults (N=100k, D=512, K=10 unless told).

Everything the default does is included: the held-out heads' temperature search and
5-fold cross-fitting, both threshold-sample runs and the k=10 neighbour search (with
whatever index the default picks at this size). The data are clustered unit vectors with
local structure (see ``_clustered_embeddings``) and 10% flipped labels (``--noise-rate``);
with ``--memmap`` they are a float16 ``.npy`` memory map, as the embedding cache serves them.
The approximate index's recall against exact search is measured on 1000 random queries.
Wall and CPU time are given, and the same-run ratio to a 5-fold LogisticRegression +
cleanlab pipeline; ``--curve N1 N2 ...`` measures each N in its own process.

Run: ``python benchmarks/score_speed.py [--n-samples 100000] [--device auto] [--write]``;
each device gets its own section of ``docs/benchmarks.md``, the curve ``score_scale``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
PROFILE = False  # --profile: where the fit's time goes (cProfile, on stderr)


def _clustered_embeddings(n_samples, n_features, n_classes, *, noise_rate, seed, out=None,
                          block: int = 65536):
    """Unit vectors with local structure, as real embeddings have: each class holds 100
    sub-clusters (views, patients, scanners) around its centre. Returns (embeddings,
    given labels, flipped mask); ``noise_rate`` of the labels flipped to another class.
    ``out`` : an (N, D) array to fill (e.g. a float16 memory map), else float32 in memory;
    rows are generated ``block`` at a time (the same numbers as all at once)."""
    rng = np.random.default_rng(seed)
    class_centres = rng.normal(size=(n_classes, n_features))
    sub_centres = (np.repeat(class_centres, 100, axis=0)
                   + 0.8 * rng.normal(size=(n_classes * 100, n_features)))
    sub_cluster = rng.integers(0, n_classes * 100, n_samples)
    points = np.empty((n_samples, n_features), np.float32) if out is None else out
    for start in range(0, n_samples, block):
        part = (sub_centres[sub_cluster[start:start + block]]
                + 0.6 * rng.normal(size=(min(block, n_samples - start), n_features)))
        points[start:start + block] = part / np.linalg.norm(part, axis=1, keepdims=True)
    labels = sub_cluster // 100
    flipped = rng.random(n_samples) < noise_rate
    labels[flipped] = (labels[flipped] + rng.integers(1, n_classes, flipped.sum())) % n_classes
    return points, labels, flipped


def _recall_on_subsample(embeddings, neighbor_ids, *, n_queries: int, seed: int) -> float:
    """Recall@k of ``neighbor_ids`` against exact search on ``n_queries`` random rows of the
    standardised unit rows the default searches (read a block at a time: no full copy)."""
    from clipsei.engine.features import FeatureRows, column_moments
    from clipsei.engine.neighbors import estimate_recall

    mean, spread = column_moments(embeddings)
    rows = FeatureRows(embeddings, mean, np.where(spread > 0, spread, 1), max_dense_bytes=0)
    return estimate_recall(rows, neighbor_ids, n_queries=n_queries, random_state=seed)


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_fit(detector_class, embeddings, labels, device):
    """(wall seconds, CPU seconds, fitted detector) of the default detector with heads on
    ``device``; each stage's start goes to stderr with the time and the peak RSS so far."""
    start, cpu_start, stages = time.perf_counter(), _cpu_seconds(), set()

    def progress(stage, done, total):
        if stage not in stages:
            stages.add(stage)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"  {time.perf_counter() - start:7.1f} s  {stage} starts, peak RSS "
                  f"{peak:.2f} GiB", file=sys.stderr, flush=True)

    profiler = None
    if PROFILE:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    detector = detector_class(device=device, random_state=0).fit(embeddings, labels,
                                                                 progress=progress)
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    return time.perf_counter() - start, _cpu_seconds() - cpu_start, detector


def _baseline_line(embeddings, labels, flipped, seconds, cpu_seconds, auroc) -> str:
    """Same data, same run: 5-fold ``LogisticRegression(C=1)`` + ``cleanlab.filter``."""
    from sklearn.metrics import roc_auc_score

    from clipsei.evaluation.bench import score_cleanlab

    start, cpu_start = time.perf_counter(), _cpu_seconds()
    scores, flags = score_cleanlab(np.asarray(embeddings, np.float32), labels, random_state=0,
                                   C=1.0)
    baseline_seconds = time.perf_counter() - start
    baseline_cpu = _cpu_seconds() - cpu_start
    baseline_auroc = roc_auc_score(flipped, -scores)
    return (f"Baseline, same data and run: 5-fold LogisticRegression(C=1) + "
            f"cleanlab.filter.find_label_issues: wall {baseline_seconds:.1f} s (CPU "
            f"{baseline_cpu:.1f} s), AUROC {baseline_auroc:.3f}, {int(flags.sum())} flagged; "
            f"baseline / clipsei ratio: wall time {baseline_seconds / seconds:.2f}, CPU time "
            f"{baseline_cpu / cpu_seconds:.2f} (clipsei AUROC {auroc:.3f})")


def _make_data(args, folder):
    """The benchmark's data: float32 in memory, or with ``--memmap`` a float16 .npy file in
    ``folder`` opened as a read-only memory map (as the embedding cache serves it)."""
    shape = (args.n_samples, args.n_features)
    options = dict(noise_rate=args.noise_rate, seed=0)
    if not args.memmap:
        return _clustered_embeddings(*shape, args.n_classes, **options)
    path = Path(folder) / "embeddings.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    _, labels, flipped = _clustered_embeddings(*shape, args.n_classes, out=out, **options)
    out.flush()
    del out
    return np.load(path, mmap_mode="r"), labels, flipped


def _measure(args) -> dict:
    """One fit of the defaults on fresh data: time, peak RSS, neighbour search and AUROC."""
    import tempfile

    from sklearn.metrics import roc_auc_score

    from clipsei._device import resolve_device
    from clipsei.engine.detect import LabelIssueDetector

    with tempfile.TemporaryDirectory(prefix="score-speed-") as folder:
        embeddings, labels, flipped = _make_data(args, folder)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        device = resolve_device(args.device)
        seconds, cpu_seconds, detector = _timed_fit(LabelIssueDetector, embeddings, labels,
                                                    device)
        result = dict(
            n_samples=args.n_samples, device=str(device), seconds=seconds,
            cpu_seconds_fit=cpu_seconds,
            peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            rss_before_gib=rss_before, search=detector.neighbor_search_,
            k=detector.n_neighbors, n_flipped=int(flipped.sum()),
            recall=_recall_on_subsample(embeddings, detector.neighbor_ids_, n_queries=1000,
                                        seed=1),
            auroc=roc_auc_score(flipped, -detector.issues_["label_score"]),
            n_flagged=int(detector.issues_["is_label_issue"].sum()))
        if device.type == "cuda":
            import torch

            result["gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if device.type != "cpu":  # the baseline, same data and machine, heads on the CPU
            cpu_seconds, _, cpu_detector = _timed_fit(LabelIssueDetector, embeddings, labels,
                                                      "cpu")
            result["cpu_seconds"] = cpu_seconds
            result["cpu_auroc"] = roc_auc_score(flipped, -cpu_detector.issues_["label_score"])
        if not args.no_baseline:
            result["baseline"] = _baseline_line(embeddings, labels, flipped, seconds,
                                                cpu_seconds, result["auroc"])
    return result


def _index_text(search) -> str:
    if search["index"] == "exact":
        return "exact IndexFlatIP"
    return (f"IVF ({search['index']}), n_probe {search['n_probe']}, its own recall "
            f"estimate {search['recall_at_k']:.3f}")


def _lines(args, result) -> list:
    """The measurement as the section's paragraphs."""
    device = result["device"]
    gpu = (f", peak GPU memory {result['gpu_gib']:.2f} GiB" if "gpu_gib" in result else "")
    lines = [
        f"N={args.n_samples} D={args.n_features} K={args.n_classes}"
        f"{', float16 memory map' if args.memmap else ''}, heads on {device}: "
        f"wall {result['seconds']:.1f} s (CPU {result['cpu_seconds_fit']:.1f} s), "
        f"peak RSS {result['peak_gib']:.2f} GiB "
        f"({result['rss_before_gib']:.2f} GiB before fit: torch, the data and their "
        f"generation){gpu}, neighbour index {_index_text(result['search'])}, "
        f"recall@{result['k']} vs exact on 1000 other queries {result['recall']:.3f}, "
        f"AUROC on the planted {args.noise_rate:.0%} flips {result['auroc']:.3f}, "
        f"{result['n_flagged']} flagged of {result['n_flipped']} flipped"]
    if "cpu_seconds" in result:
        lines.append(f"Same machine, heads on the CPU: wall {result['cpu_seconds']:.1f} s, AUROC "
                     f"{result['cpu_auroc']:.3f}; CPU / {device.split(':')[0].upper()} "
                     f"wall-time ratio {result['cpu_seconds'] / result['seconds']:.2f}")
    if "baseline" in result:
        lines.append(result["baseline"])
    return lines


def _curve(args, argv) -> list:
    """Each N of ``--curve`` measured in its own process (peak RSS is per process)."""
    import json
    import subprocess
    import tempfile

    rows, unfinished = [], []
    folder = Path(args.points_dir or tempfile.mkdtemp(prefix="score-curve-"))
    for n_samples in args.curve:
        point = folder / f"{n_samples}.json"  # kept: a later call reuses a measured point
        if not point.exists():
            command = [sys.executable, __file__, *_strip_curve(argv), "--n-samples",
                       str(n_samples), "--json", str(point)]
            if n_samples != args.baseline_at:
                command.append("--no-baseline")
            try:
                subprocess.run(command, check=True, timeout=args.point_timeout)
            except subprocess.TimeoutExpired:
                unfinished.append(f"N={n_samples:,} did not finish within the "
                                  f"{args.point_timeout:.0f} s allowed per point")
                continue
        rows.append(json.loads(point.read_text()))
    table = ["| N | wall s | CPU s | peak RSS GiB (before fit) | neighbour index | n_probe | "
             "recall@k (own / 1000 other queries) | AUROC | flagged / flipped |",
             "|---" * 9 + "|"]
    for row in rows:
        search = row["search"]
        table.append(f"| {row['n_samples']:,} | {row['seconds']:.0f} | "
                     f"{row.get('cpu_seconds_fit', float('nan')):.0f} | {row['peak_gib']:.2f} "
                     f"({row['rss_before_gib']:.2f}) | "
                     f"{search['index']} | {search['n_probe'] or '-'} | "
                     f"{search['recall_at_k']:.3f} / {row['recall']:.3f} | {row['auroc']:.3f} | "
                     f"{row['n_flagged']} / {row['n_flipped']} |")
    return (["\n".join(table)] + unfinished
            + [row["baseline"] for row in rows if "baseline" in row])


def _strip_curve(argv) -> list:
    """``argv`` without ``--curve`` and its values, ``--write`` and ``--baseline-at``."""
    kept, skipping = [], False
    for item in argv:
        if item in ("--curve", "--baseline-at", "--point-timeout", "--points-dir", "--note"):
            skipping = True
        elif item.startswith("--"):
            skipping = False
            if item != "--write":
                kept.append(item)
        elif not skipping:
            kept.append(item)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--noise-rate", type=float, default=0.1)
    parser.add_argument("--memmap", action="store_true",
                        help="embeddings as a float16 .npy memory map, as the cache serves them")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the 5-fold LogisticRegression + cleanlab baseline")
    parser.add_argument("--curve", type=int, nargs="+",
                        help="measure these N, each in its own process (a time/memory curve)")
    parser.add_argument("--baseline-at", type=int, default=100_000,
                        help="with --curve: the N that also runs the baseline")
    parser.add_argument("--point-timeout", type=float,
                        help="with --curve: give up on a point after this many seconds")
    parser.add_argument("--points-dir", help="with --curve: keep each point's result here as "
                        "N.json and reuse those already there")
    parser.add_argument("--profile", action="store_true",
                        help="print the fit's cProfile (top 30, cumulative) on stderr")
    parser.add_argument("--note", default="", help="a paragraph appended to the section")
    parser.add_argument("--json", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    if args.curve:
        lines, name = _curve(args, argv), "score_scale"
        title = (f"## Scoring time and memory from {args.curve[0]:,} to {args.curve[-1]:,} rows "
                 f"(D={args.n_features}, K={args.n_classes}, {args.noise_rate:.0%} flips"
                 f"{', float16 memory map' if args.memmap else ''})")
    else:
        result = _measure(args)
        if args.json:
            import json

            Path(args.json).write_text(json.dumps(result))
            return 0
        lines, device = _lines(args, result), result["device"].split(":")[0]
        name, title = (("score_speed", "## Scoring speed (`find_label_issues` defaults)")
                       if device == "cpu" else
                       (f"score_speed_{device}", f"## Scoring speed (`find_label_issues` "
                        f"defaults, heads on {device.upper()})"))
    lines += [args.note] if args.note else []
    print("\n\n".join(lines))
    if args.write:
        from _docs import machine_line, write_section

        command = "python benchmarks/score_speed.py " + " ".join(
            item for item in argv if item not in ("--note", args.note))
        write_section(name, "\n".join([
            title, "", f"Command: `{command.strip()}`  ", machine_line(args.device), "",
            "\n\n".join(lines), ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
