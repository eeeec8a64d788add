"""Speed of the prompt-tuned head (``method="sei_prompt"``) with ViT-B-32's text encoder.

Random-weight ViT-B-32 (``load_clip_model("ViT-B-32", "none")``: the same shapes and cost as
real weights) and random unit image embeddings of its size (D = 512), K classes plus the
"other" prompt. A run's cost is its text-encoder passes: ``MAX_STEPS_PER_EPOCH`` training
steps an epoch (each a forward and backward pass over the K + 1 prompts) and one recording
pass, whatever N; the image side is one (N, D) x (D, K + 1) product. The script times
``n_epochs`` epochs of one head and the linear head of ``"sei_paper"`` at the same N, E, K in
the same run, and extrapolates ``sei_prompt`` (two threshold runs) from the measured
seconds per epoch.

Run: ``python benchmarks/prompt_head_speed.py [--n-samples 20000] [--n-classes 20]
[--n-epochs 2] [--device auto] [--threads N] [--write]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL_EPOCHS = 10  # the estimator's default n_epochs, for the extrapolation


def _measure(args) -> dict:
    from clipsei.engine.detect import find_label_issues
    from clipsei.engine.prompt_head import MAX_STEPS_PER_EPOCH, train_prompt_head
    from clipsei.images.embed import load_clip_model

    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: intended here
        model = load_clip_model("ViT-B-32", "none", device=args.device)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(args.n_samples, model.embed_dim)).astype(np.float32)
    labels = rng.integers(0, args.n_classes, args.n_samples)
    labels[: args.n_samples // (args.n_classes + 1)] = args.n_classes  # threshold samples
    names = [f"class {k}" for k in range(args.n_classes)]
    start, cpu_start = time.perf_counter(), time.process_time()
    train_prompt_head(embeddings, labels, model, names, other_class="different object",
                      n_epochs=args.n_epochs, random_state=0)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    prompt_seconds = time.perf_counter() - start
    prompt_cpu_seconds = time.process_time() - cpu_start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random embeddings: "no class information", expected
        find_label_issues(embeddings, labels % args.n_classes, method="sei_paper",
                          n_epochs=FULL_EPOCHS, device=str(model.device))
    linear_seconds = time.perf_counter() - start
    per_epoch = prompt_seconds / args.n_epochs
    batch = max(32, -(-args.n_samples // MAX_STEPS_PER_EPOCH))  # the default batch size
    return dict(device=str(model.device), threads=torch.get_num_threads(),
                steps=-(-args.n_samples // batch), prompt_seconds=prompt_seconds,
                prompt_cpu_seconds=prompt_cpu_seconds, per_epoch=per_epoch,
                sei_prompt_estimate=2 * FULL_EPOCHS * per_epoch, linear_seconds=linear_seconds)


def _markdown(args, result: dict) -> str:
    from _docs import machine_line

    command = (f"python benchmarks/prompt_head_speed.py --n-samples {args.n_samples} "
               f"--n-classes {args.n_classes} --n-epochs {args.n_epochs} --device {args.device}"
               + (f" --threads {args.threads}" if args.threads else "") + " --write")
    n, k = args.n_samples, args.n_classes
    cpu_estimate = 2 * FULL_EPOCHS * result["prompt_cpu_seconds"] / args.n_epochs
    return "\n".join([
        f"## Prompt-tuned head speed ({result['device']})", "",
        f"`{command}`", "", machine_line(result["device"]) +
        f" torch threads: {result['threads']}.", "",
        f"Random-weight ViT-B-32 text encoder, N = {n:,} random unit image embeddings "
        f"(D = 512), K = {k} classes + the \"other\" prompt, {result['steps']} steps an epoch.",
        "", "| measured | seconds |", "|---|---:|",
        f"| one prompt head, {args.n_epochs} epochs | {result['prompt_seconds']:.1f} |",
        f"| the same, CPU time of the process | {result['prompt_cpu_seconds']:.1f} |",
        f"| per epoch (text passes: {result['steps']} forward+backward, 1 recording) | "
        f"{result['per_epoch']:.1f} |",
        f"| `sei_paper` (linear heads), {FULL_EPOCHS} epochs, whole fit | "
        f"{result['linear_seconds']:.1f} |", "",
        f"Extrapolated `sei_prompt` at {FULL_EPOCHS} epochs (two threshold runs, "
        f"2 x {FULL_EPOCHS} x per-epoch): about {result['sei_prompt_estimate'] / 60:.1f} min "
        f"wall here, {result['sei_prompt_estimate'] / max(result['linear_seconds'], 1e-9):.0f}x"
        " the linear heads' whole fit; from the process's CPU time (what an idle core of this "
        f"kind would take) about {cpu_estimate / 60:.1f} min. Where wall time is far above CPU "
        "time the machine was shared. The cost hardly grows with N (one image-side product per "
        "step), so smaller sets take about as long.",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--n-classes", type=int, default=20)
    parser.add_argument("--n-epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as is)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = _measure(args)
    markdown = _markdown(args, result)
    print(markdown)
    if args.write:
        from _docs import write_section

        write_section(f"prompt_head_speed_{result['device'].split(':')[0]}", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
