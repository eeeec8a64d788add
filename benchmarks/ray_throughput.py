"""``embed_images`` throughput: the local engine against ``engine="ray"`` on one machine.

A local Ray instance with ``--num-cpus`` CPUs (no GPU) and the same model, batch size and
generated 256-px JPEGs on both sides, in alternating pairs of runs without a cache. Also timed:
``ray.init`` and a run of ``--batch-size`` images (Ray's fixed cost per run: starting the
encoder actors, which import torch and open_clip, and the dataset's scheduling).

    python benchmarks/ray_throughput.py --n-images 600 --repeats 2 --write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402
from embed_throughput import make_jpegs  # noqa: E402

from clipsei.images.data import load_image_table  # noqa: E402
from clipsei.images.embed import embed_images, load_clip_model  # noqa: E402


def _timed(table, model, batch_size: int, engine: str) -> float:
    start = time.perf_counter()
    result = embed_images(table, model, batch_size=batch_size, progress=False, engine=engine)
    if result.indices.size != len(table):
        raise RuntimeError(f"{engine}: {len(result.failures)} images failed")
    return time.perf_counter() - start


def run(n_images: int, batch_size: int, num_cpus: int, repeats: int, model_name: str) -> dict:
    """Seconds per run of each engine, ``ray.init``'s and the one-batch run's."""
    import ray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_clip_model(model_name, "none", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp) / "all", n_images)
        make_jpegs(Path(tmp) / "one", batch_size, seed=1)
        table, one = load_image_table(Path(tmp) / "all"), load_image_table(Path(tmp) / "one")
        start = time.perf_counter()
        ray.init(num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            times = {"local": [], "ray": [], "ray_one_batch": []}
            _timed(one, model, batch_size, "ray")  # workers' first imports, not counted
            for _ in range(repeats):
                for engine in ("local", "ray"):
                    times[engine].append(_timed(table, model, batch_size, engine))
                times["ray_one_batch"].append(_timed(one, model, batch_size, "ray"))
        finally:
            ray.shutdown()
    return {"init_s": init_s, **times, "n_images": n_images, "batch_size": batch_size,
            "num_cpus": num_cpus, "model": model_name, "load": os.getloadavg()[0]}


def to_markdown(result: dict, command: str) -> str:
    n = result["n_images"]
    best = {key: min(result[key]) for key in ("local", "ray", "ray_one_batch")}
    rows = [f"| {engine} | {', '.join(f'{s:.1f}' for s in result[engine])} | "
            f"{n / best[engine]:.0f} |" for engine in ("local", "ray")]
    marginal = (n - result["batch_size"]) / max(best["ray"] - best["ray_one_batch"], 1e-9)
    return "\n".join([
        "## Embedding on Ray on one machine (issue 18, item 4)", "",
        f"Command: `{command}`  ", machine_line(), "",
        f"{n} generated 256-px JPEGs, {result['model']} (random weights), batch "
        f"{result['batch_size']}, a local Ray instance of {result['num_cpus']} CPUs, no cache; "
        f"load average {result['load']:.1f} at the end (the machine is shared: absolute times "
        "are noisy, the same-run ratio less so).", "",
        "| engine | seconds per run | img/s (best run) |", "|---|---|---|", *rows, "",
        f"Ray / local throughput: {best['local'] / best['ray']:.2f}. `ray.init`: "
        f"{result['init_s']:.1f} s. A run of one batch ({result['batch_size']} images) on Ray: "
        f"{best['ray_one_batch']:.1f} s, Ray's fixed cost per run (encoder actors import torch "
        "and open_clip and load the model). Past that cost Ray embeds "
        f"{marginal:.0f} img/s here ((N - batch) / (run - one-batch run)), "
        f"{marginal * best['local'] / n:.2f} of the local engine's rate.",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="clipsei-tiny")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = run(args.n_images, args.batch_size, args.num_cpus, args.repeats, args.model)
    command = "python benchmarks/ray_throughput.py " + " ".join(argv or sys.argv[1:])
    markdown = to_markdown(result, command.strip())
    print(markdown)
    if args.write:
        write_section("ray_throughput", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
