"""End-to-end ``embed_images`` throughput vs bare ``model.encode_image`` on decoded tensors.

ViT-B-32 with random weights (no download) over generated JPEGs (256 px unless
``--image-size`` says otherwise) in a temp folder. Both
sides use the same model, batch size, device, precision (autocast on CUDA) and memory format; the
bare side gets every image already decoded, preprocessed and on the device. The goal is a ratio
end-to-end / bare >= 0.9, the median over ``--repeats`` interleaved pairs of runs.
``--decode cpu device`` also times the tensor decode path (``embed_images(decode="device")``)
against the PIL path in the same run.

    python benchmarks/embed_throughput.py --n-images 96 --batch-size 32 --repeats 5 --write
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402

from clipsei.images.data import ImageTable, load_image, load_image_table  # noqa: E402
from clipsei.images.embed import _default_num_workers, embed_images, load_clip_model  # noqa: E402


def make_jpegs(folder: Path, n_images: int, size: int = 256, seed: int = 0) -> None:
    """Write ``n_images`` smooth random RGB JPEGs (quality 90) into two class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # upsampled: JPEG-like content
        image = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        target = folder / f"class{i % 2}" / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=90)


def time_bare(model, tensors: torch.Tensor, batch_size: int) -> float:
    """Seconds for ``model.encode_image`` over (N, 3, H, W) tensors already on the device."""
    amp = contextlib.nullcontext()
    if model.device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        amp = torch.autocast("cuda", dtype=dtype)
    _synchronize(model.device)
    start = time.perf_counter()
    with torch.inference_mode(), amp:
        for first in range(0, len(tensors), batch_size):
            features = model.model.encode_image(tensors[first:first + batch_size])
            torch.nn.functional.normalize(features.float(), dim=-1)
    _synchronize(model.device)
    return time.perf_counter() - start


def time_end_to_end(model, table, batch_size: int, num_workers, jpeg_draft: bool,
                    decode: str = "cpu") -> float:
    start = time.perf_counter()
    result = embed_images(table, model, batch_size=batch_size, num_workers=num_workers,
                          progress=False, jpeg_draft=jpeg_draft, decode=decode)
    elapsed = time.perf_counter() - start
    assert result.failures.empty and len(result.indices) == len(table)
    return elapsed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(n_images: int, batch_size: int, num_workers, device: str, repeats: int,
        image_size: int = 256, jpeg_draft: bool = True, decode: str = "cpu",
        model_name: str = "ViT-B-32") -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_clip_model(model_name, "none", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        make_jpegs(Path(tmp), n_images, size=image_size)
        table = load_image_table(tmp)
        tensors = torch.stack([model.preprocess(load_image(p)) for p in table.paths])
        tensors = tensors.to(model.device)
        if model.device.type == "cuda":
            tensors = tensors.contiguous(memory_format=torch.channels_last)
        workers = _default_num_workers(model.device, n_images, batch_size) \
            if num_workers is None else num_workers
        time_bare(model, tensors[:batch_size], batch_size)  # warm-up, both sides
        warm = ImageTable(table.paths[:batch_size], table.labels[:batch_size], table.class_names)
        embed_images(warm, model, batch_size=batch_size, num_workers=0, progress=False,
                     decode=decode)
        bare, e2e = [], []
        for _ in range(repeats):
            bare.append(time_bare(model, tensors, batch_size))
            e2e.append(time_end_to_end(model, table, batch_size, workers, jpeg_draft, decode))
    ratios = np.asarray(bare) / np.asarray(e2e)  # per interleaved pair: e2e img/s / bare img/s
    return {"device": str(model.device), "workers": workers, "n": n_images,
            "size": image_size, "draft": jpeg_draft and decode == "cpu", "decode": decode,
            "bare_ips": n_images / np.median(bare), "e2e_ips": n_images / np.median(e2e),
            "ratio": float(np.median(ratios)), "ratio_range": (ratios.min(), ratios.max()),
            "threads": torch.get_num_threads(), "model": model_name}


def sample_photos() -> list:
    """Real photographs shipped inside installed packages (no download): matplotlib's Grace
    Hopper (512x600) and scikit-learn's china and flower (427x640) JPEGs."""
    import matplotlib
    import sklearn.datasets

    return [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
            Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
            Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg"]


def draft_fidelity(paths: list, input_sizes=(224, 112, 56)) -> list:
    """How far draft-mode JPEG decoding moves a model's input, on real photographs.

    For each JPEG and model input size S, the image is resized (shorter side, bicubic with
    antialias, as open_clip does) and centre-cropped to S x S from the full decode and from
    the draft decode; the two uint8 inputs are compared (PSNR in dB, mean absolute difference
    in grey levels of 255). A smaller S on these ~500-px photos stands in for larger photos at
    224: what matters is the DCT scale, which grows with image size / S.
    """
    from torchvision import transforms

    from clipsei.images.data import decode_image_bytes
    from clipsei.images.decode import PilToUint8

    rows = []
    for path, size in itertools.product(paths, input_sizes):
        data = Path(path).read_bytes()
        full = decode_image_bytes(data)
        reduced = decode_image_bytes(data, min_size=(size, size))
        to_input = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size), PilToUint8()])
        if reduced.size == full.size:
            continue  # too small for this input: decoded at full size either way
        diff = to_input(full).float() - to_input(reduced).float()
        mse = max(float((diff**2).mean()), 1e-12)
        rows.append({"photo": Path(path).name, "size": full.size, "input": size,
                     "scale": full.size[0] // reduced.size[0],
                     "psnr": float(10 * np.log10(255**2 / mse)),
                     "mean_abs": float(diff.abs().mean())})
    return rows


def fidelity_markdown(rows: list, command: str) -> str:
    table = [f"| {r['photo']} ({r['size'][0]}x{r['size'][1]}) | {r['input']} | 1/{r['scale']} | "
             f"{r['psnr']:.1f} | {r['mean_abs']:.2f} |" for r in rows]
    return "\n".join([
        "## Draft-mode JPEG decoding: how much the model input moves", "",
        "`embed_images` decodes a JPEG at least twice the model's input size at a reduced DCT "
        "scale (PIL's draft mode; `jpeg_draft=False` turns it off). Each real photograph below "
        "is resized and centre-cropped to the model input both ways and the uint8 inputs are "
        "compared. Small inputs on these ~500-px photos stand in for larger photos at 224 px: "
        "what matters is the DCT scale. (The shared brain-MRI JPEGs hold grey levels 0-2 only, "
        "so they cannot show a difference.)", "",
        f"Command: `{command}`  ", machine_line(), "",
        "| photo | model input px | DCT scale | PSNR dB | mean abs. difference (of 255) |",
        "|---|---|---|---|---|", *table, ""])


def to_markdown(results: list, command: str) -> str:
    rows = [f"| {r['device']} | {r['decode']} | {r['size']} | {'yes' if r['draft'] else 'no'} | "
            f"{r['workers']} | {r['n']} | {r['bare_ips']:.1f} | "
            f"{r['e2e_ips']:.1f} | {r['ratio']:.2f} ({r['ratio_range'][0]:.2f}-"
            f"{r['ratio_range'][1]:.2f}) |" for r in results]
    return "\n".join([
        "## Embedding throughput (`embed_images` vs bare `encode_image`)", "",
        f"{results[0]['model']}, random weights, generated square JPEGs, no cache. "
        "*bare* = `model.encode_image`"
        " on tensors already decoded, preprocessed and on the device; *end-to-end* = "
        "`embed_images` from JPEG files (decode, preprocess, encode, normalise). "
        f"{results[0]['repeats']} interleaved bare/end-to-end pairs; img/s are medians, the ratio "
        "is the median of the per-pair ratios (range in brackets). Goal: ratio >= 0.9.", "",
        f"Load average when the run ended: {os.getloadavg()[0]:.1f} (other work shared the "
        "cores, so absolute img/s are noisy).", "",
        f"Command: `{command}`", "",
        machine_line(results[0]["device"]) + f" torch threads: {results[0]['threads']}.",
        "",
        "| device | decode | JPEG px | draft decode | DataLoader workers | images | bare img/s | "
        "end-to-end img/s | ratio (range) |",
        "|---|---|---|---|---|---|---|---|---|", *rows, *decode_ratios(results)])


def decode_ratios(results: list) -> list:
    """Lines: the tensor decode path's end-to-end/bare ratio over the PIL path's, same run
    (each row against its own interleaved bare runs, so load drift between rows cancels)."""
    lines = []
    for device_row in (r for r in results if r["decode"] == "device"):
        for pil in (r for r in results if r["decode"] == "cpu" and r["size"] == device_row["size"]
                    and r["workers"] == device_row["workers"]):
            lines.append(f"- {device_row['size']} px, {pil['workers']} workers: tensor path / PIL "
                         f"path ({'draft' if pil['draft'] else 'full-size'} decode) = "
                         f"{device_row['ratio'] / pil['ratio']:.2f}x (end-to-end/bare ratios)")
    return ["", "Tensor decode path (`decode=\"device\"`) vs PIL path, same run. Goals "
            "(issue 18): on CUDA, the tensor path's ratio >= 0.5 at 256 px and a clear gain at "
            "1024 px; on the CPU the PIL path stays the default.", "", *lines] if lines else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="*", default=None,
                        help="worker counts to compare (default: embed_images' own choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, nargs="*", default=[256],
                        help="JPEG side lengths to compare (default: 256)")
    parser.add_argument("--no-jpeg-draft", action="store_true",
                        help="also time full-size decoding (embed_images(jpeg_draft=False))")
    parser.add_argument("--model", default="ViT-B-32",
                        help="open_clip model, random weights (clipsei-tiny: decoding dominates)")
    parser.add_argument("--decode", nargs="*", choices=("cpu", "device"), default=["cpu"],
                        help="decode paths to compare (embed_images(decode=...); default cpu)")
    parser.add_argument("--fidelity", action="store_true",
                        help="instead of timing, compare draft and full JPEG decoding on real "
                             "photographs shipped with matplotlib and scikit-learn")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md section")
    args = parser.parse_args(argv)
    command = "python benchmarks/embed_throughput.py " + " ".join(argv or sys.argv[1:])
    if args.fidelity:
        fidelity = draft_fidelity(sample_photos())
        print("\n".join(str(row) for row in fidelity))
        if args.write:
            write_section("jpeg_draft_fidelity", fidelity_markdown(fidelity, command))
        return 0
    results = []
    drafts = [True, False] if args.no_jpeg_draft else [True]
    combos = [(size, decode, draft, workers) for size, decode, draft, workers
              in itertools.product(args.image_size, args.decode, drafts,
                                   args.num_workers or [None])
              if decode == "cpu" or draft == drafts[-1]]  # the device path never drafts
    for size, decode, draft, workers in combos:
        result = run(args.n_images, args.batch_size, workers, args.device, args.repeats,
                     image_size=size, jpeg_draft=draft, decode=decode, model_name=args.model)
        results.append({**result, "repeats": args.repeats})
        print(f"{result['device']} {size}px decode={decode} draft={result['draft']} "
              f"workers={result['workers']}: "
              f"bare {result['bare_ips']:.1f} "
              f"img/s, end-to-end {result['e2e_ips']:.1f} img/s, "
              f"ratio {result['ratio']:.2f} {np.round(result['ratio_range'], 2)}", flush=True)
    if args.write:
        device = results[0]["device"].split(":")[0]
        name = "embed_throughput" if args.decode == ["cpu"] else "embed_decode_throughput"
        name = name if args.model == "ViT-B-32" else f"{name}_{args.model.replace('-', '_')}"
        name = name if device == "cpu" else f"{name}_{device}"
        write_section(name, to_markdown(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
