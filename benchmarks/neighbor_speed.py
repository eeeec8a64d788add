"""Speed, memory and recall of the neighbour stage alone (k = 10), the default against FAISS
indexes searched one query at a time, on the data ``score_speed.py`` generates.

Each variant runs in its own process (peak RSS is its own), in alternating order and
``--repeats`` times: ``default`` is :func:`clipsei.engine.neighbors.search_neighbors` as the
detector calls it (inverted file scanned a list at a time with BLAS); ``previous`` the same
function as of git commit ``--previous`` (read with ``git show``: the per-query IVF-SQ8
search); ``ivf-sq8``, ``ivf-fp16`` and ``ivf-flat`` FAISS IVF indexes with 8-bit, float16
and float32 codes (same lists and training, probes doubled on the same 500-query sample,
this version's helpers, then every row searched); ``hnsw`` FAISS ``IndexHNSWFlat`` (32
links, efSearch doubled from 16 on the sample). Each gives the stage's wall and CPU time,
the probes chosen and recall@10 on 1000 other queries.

Run: ``python benchmarks/neighbor_speed.py --n-samples 100000 [--variants default previous]
[--repeats 2] [--write]`` (``--write``: the ``neighbor_speed`` section of docs/benchmarks.md,
``neighbor_speed_<N>`` for another N).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
VARIANTS = ("default", "previous", "ivf-sq8", "ivf-fp16", "ivf-flat", "hnsw")
PREVIOUS = "4536d1a"  # the last commit with the per-query IVF-SQ8 search


def _rows(n_samples, n_features, n_classes):
    """Standardised unit rows of score_speed's clustered data (as the detector searches)."""
    from score_speed import _clustered_embeddings

    from clipsei.engine.features import FeatureRows, column_moments

    embeddings, _, _ = _clustered_embeddings(n_samples, n_features, n_classes, noise_rate=0.1,
                                             seed=0)
    mean, spread = column_moments(embeddings)
    return FeatureRows(embeddings, mean, np.where(spread > 0, spread, 1))


def _faiss_index(rows, variant):
    """A FAISS index of ``rows``, trained as the previous default trained its IVF-SQ8."""
    import faiss

    n_samples, dim = rows.shape
    if variant == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    else:
        n_lists = max(1, int(np.sqrt(n_samples)))
        quantizer = faiss.IndexFlatIP(dim)
        if variant == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        else:
            qtype = {"ivf-sq8": faiss.ScalarQuantizer.QT_8bit,
                     "ivf-fp16": faiss.ScalarQuantizer.QT_fp16}[variant]
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, n_lists, qtype,
                                                  faiss.METRIC_INNER_PRODUCT)
        index.cp.seed, index.cp.niter, index.cp.min_points_per_centroid = 0, 10, 5
        sample = np.random.default_rng(0).choice(n_samples, min(n_samples, 30 * n_lists),
                                                 replace=False)
        index.train(rows.rows(sample))
    for _, block in rows.blocks():
        index.add(block)
    return index


def _faiss_stage(rows, variant, k):
    """The previous default's stage with a FAISS index: the probes (IVF) or efSearch (HNSW)
    doubled until the sample's recall holds, then every row searched once.
    Returns (ids, setting)."""
    from clipsei.engine import neighbors
    from clipsei.engine.progress import StageProgress

    index = _faiss_index(rows, variant)
    queries, exact_ids, exact_sims = neighbors._exact_sample(rows, k, None, 500, 0)
    search = partial(neighbors._search_in_blocks, index, rows)
    setting, limit = (16, 4096) if variant == "hnsw" else (1, index.nlist)
    while True:
        if variant == "hnsw":
            index.hnsw.efSearch = setting
        else:
            index.nprobe = setting
        found, _ = neighbors._search_excluding(search, rows, k, None, StageProgress(None, "", 0),
                                               queries=queries)
        if (neighbors._recall(found, exact_ids, exact_sims, lower_bound=True) >= 0.95
                or setting >= limit):
            break
        setting = min(2 * setting, limit)
    ids, _ = neighbors._search_excluding(search, rows, k, None, StageProgress(None, "", 0))
    return ids, setting


def _previous_module(revision):
    """``clipsei.engine.neighbors`` as of git ``revision``, loaded beside the current one."""
    import types

    source = subprocess.run(["git", "show", f"{revision}:clipsei/engine/neighbors.py"],
                            cwd=HERE.parent, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("clipsei.engine._previous_neighbors")
    module.__package__ = "clipsei.engine"
    sys.modules[module.__name__] = module
    exec(compile(source, f"{revision}:neighbors.py", "exec"), module.__dict__)
    return module


def _one(args) -> dict:
    """Measure one variant in this process; returns its figures."""
    import faiss

    from clipsei.engine import neighbors

    rows = _rows(args.n_samples, args.n_features, args.n_classes)
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.only in ("default", "previous"):
        module = neighbors if args.only == "default" else _previous_module(args.previous)
        search = module.search_neighbors(rows, n_neighbors=10, random_state=0)
        ids, setting = search.neighbor_ids, search.n_probe
    else:
        ids, setting = _faiss_stage(rows, args.only, 10)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    recall = neighbors.estimate_recall(rows, ids, n_queries=1000, random_state=1)
    return {"variant": args.only, "wall": wall, "cpu": cpu, "setting": setting,
            "recall": recall, "threads": faiss.omp_get_max_threads(),
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return handle.read().split()[0]


def _table(args, results) -> list:
    """Markdown lines: one row per run, then the medians' ratio to the previous default."""
    lines = ["| variant | run | wall s | CPU s | probes / efSearch | recall@10 (1000 q) | "
             "peak RSS GiB | load before |", "|---|---|---|---|---|---|---|---|"]
    for number, item in enumerate(results):
        lines.append(f"| {item['variant']} | {number + 1} | {item['wall']:.1f} | "
                     f"{item['cpu']:.1f} | {item['setting']} | {item['recall']:.3f} | "
                     f"{item['peak_gib']:.2f} | {item['load']} |")
    median = {name: (np.median([r["wall"] for r in results if r["variant"] == name]),
                     np.median([r["cpu"] for r in results if r["variant"] == name]))
              for name in args.variants}
    base = "previous" if "previous" in median else "ivf-sq8"
    if base in median:
        base_wall, base_cpu = median[base]
        ratios = "; ".join(f"{name} {base_wall / wall:.2f} wall, {base_cpu / cpu:.2f} CPU"
                           for name, (wall, cpu) in median.items())
        lines += ["", f"Median time of `{base}` / each variant's: {ratios}"]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=["default", "previous"],
                        choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--previous", default=PREVIOUS, help="git revision of 'previous'")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        print(json.dumps(_one(args)))
        return 0
    root = HERE.parent
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    results = []
    for repeat in range(args.repeats):  # A B A B: alternate so that load drifts hit both
        order = args.variants if repeat % 2 == 0 else args.variants[::-1]
        for variant in order:
            load = _load()
            command = [sys.executable, __file__, "--only", variant, "--n-samples",
                       str(args.n_samples), "--n-features", str(args.n_features),
                       "--n-classes", str(args.n_classes), "--previous", args.previous]
            output = subprocess.run(command, env=env, check=True, capture_output=True,
                                    text=True).stdout
            results.append({**json.loads(output.strip().splitlines()[-1]), "load": load})
            print(json.dumps(results[-1]), flush=True)
    command = ("python benchmarks/neighbor_speed.py " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:]))
    from _docs import machine_line, write_section

    lines = [f"### Neighbour stage alone: {args.n_samples:,} x {args.n_features}, "
             f"K = {args.n_classes}, k = 10", "",
             f"Command: `{command}`", "", machine_line(),
             f" FAISS threads: {results[0]['threads']}.", "", *_table(args, results)]
    print("\n".join(lines))
    if args.write:
        suffix = "" if args.n_samples == 100_000 else f"_{args.n_samples}"
        write_section(f"neighbor_speed{suffix}", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
