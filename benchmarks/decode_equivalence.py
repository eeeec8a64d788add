"""How far the tensor decode path (``decode="device"``) moves model inputs and embeddings
from the PIL path, on real and generated JPEGs.

Per image set: the uint8 model input (after resize and centre crop) of each JPEG from the
tensor path against the PIL path's (full-size decode, and with its default JPEG draft), and
the per-image cosine between ``embed_images(decode="device")`` and ``decode="cpu"`` for the
tiny model and ViT-B-32 (random weights). Runs on the CPU: torchvision's CPU decoder; nvJPEG
on CUDA is not covered (see ``tests/test_decode_device.py``'s ``gpu`` tests).

    python benchmarks/decode_equivalence.py --write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine_line, write_section  # noqa: E402
from embed_throughput import make_jpegs, sample_photos  # noqa: E402

from clipsei.images.data import decode_image_bytes, load_image_table  # noqa: E402
from clipsei.images.decode import split_preprocess  # noqa: E402
from clipsei.images.decode_device import (  # noqa: E402
    decode_jpeg_list,
    device_decodable,
    resize_crop,
    tensor_preprocess,
)
from clipsei.images.embed import embed_images, load_clip_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def image_sets(tmp: Path, n_generated: int) -> dict:
    """name -> (image folder or table source, intensity). Real sets are skipped if absent."""
    sets = {}
    if (SHARED / "brain_mri").is_dir():
        sets["brain_mri (real, grey, 150-1920 px)"] = (SHARED / "brain_mri", "none")
        sets["brain_mri, intensity window"] = (SHARED / "brain_mri", "window")
    if (SHARED / "cifar10n_dev.npz").is_file():
        sets["CIFAR-10 (real, 32 px, re-encoded q95)"] = (_cifar_jpegs(tmp / "cifar", 200),
                                                         "none")
    photos = tmp / "photos"
    for i, path in enumerate(sample_photos() * 2):  # two classes of the same three photos
        (photos / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (photos / f"c{i % 2}" / f"{i}_{path.name}").write_bytes(path.read_bytes())
    sets["photos (real, 427-640 px colour)"] = (photos, "none")
    for size in (256, 1024):
        make_jpegs(tmp / f"gen{size}", n_generated, size=size)
        sets[f"generated {size} px colour"] = (tmp / f"gen{size}", "none")
    return sets


def _cifar_jpegs(folder: Path, n: int) -> Path:
    data = np.load(SHARED / "cifar10n_dev.npz")
    for i in range(n):
        target = folder / str(data["classes"][data["clean_label"][i]]) / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data["images"][i]).save(target, quality=95)
    return folder


def pixel_differences(folder: Path, preprocess) -> dict:
    """Model-input differences (grey levels of 255) of the tensor path against PIL's, over
    the JPEGs the tensor path takes."""
    plan, on_worker = tensor_preprocess(preprocess), split_preprocess(preprocess).on_worker
    size = plan.size
    full, draft, n = [], [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if not device_decodable(data):
            continue
        n += 1
        image = decode_jpeg_list([torch.frombuffer(bytearray(data), dtype=torch.uint8)], "cpu")
        tensor_input = resize_crop(image[0], plan).int()
        full.append((tensor_input - on_worker(decode_image_bytes(data)).int()).abs())
        drafted = on_worker(decode_image_bytes(data, min_size=(size, size))).int()
        draft.append((tensor_input - drafted).abs())
    full, draft = torch.stack(full).float(), torch.stack(draft).float()
    return {"n_jpeg": n, "mean_abs": float(full.mean()), "max_abs": int(full.max()),
            "share_exact": float((full == 0).float().mean()),
            "draft_mean_abs": float(draft.mean()), "draft_max_abs": int(draft.max())}


def cosines(source, model, intensity: str) -> dict:
    """Per-image cosine of decode="device" against decode="cpu" (full and draft decode)."""
    kwargs = dict(num_workers=0, progress=False, intensity=intensity)
    tensor = embed_images(source, model, decode="device", **kwargs)
    full = embed_images(source, model, decode="cpu", jpeg_draft=False, **kwargs)
    draft = embed_images(source, model, decode="cpu", **kwargs)
    assert tensor.indices.tolist() == full.indices.tolist() == draft.indices.tolist()
    cos_full = np.sum(tensor.embeddings * full.embeddings, axis=1)
    cos_draft = np.sum(tensor.embeddings * draft.embeddings, axis=1)
    return {"n": len(tensor.indices), "cos_min": float(cos_full.min()),
            "cos_median": float(np.median(cos_full)), "draft_cos_min": float(cos_draft.min())}


def run(n_generated: int, models=("clipsei-tiny", "ViT-B-32")) -> list:
    rows = []
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        loaded = {name: load_clip_model(name, "none", device="cpu") for name in models}
        for set_name, (source, intensity) in image_sets(Path(tmp), n_generated).items():
            load_image_table(source)  # fails early on a bad folder
            for name, model in loaded.items():
                row = {"set": set_name, "model": name, "intensity": intensity}
                if intensity == "none":
                    row.update(pixel_differences(Path(source), model.preprocess))
                row.update(cosines(source, model, intensity))
                rows.append(row)
                print(row, flush=True)
    return rows


def to_markdown(rows: list, command: str) -> str:
    def pixel(row, key, fmt):
        return format(row[key], fmt) if key in row else "-"

    table = [f"| {r['set']} | {r['model']} | {r['n']} | {pixel(r, 'mean_abs', '.3f')} | "
             f"{pixel(r, 'max_abs', 'd')} | {pixel(r, 'share_exact', '.1%')} | "
             f"{pixel(r, 'draft_mean_abs', '.3f')} | {r['cos_min']:.6f} | "
             f"{r['cos_median']:.6f} | {r['draft_cos_min']:.6f} |" for r in rows]
    return "\n".join([
        "## Tensor decode path vs PIL path (equivalence, CPU)", "",
        "`embed_images(decode=\"device\")` decodes JPEGs with torchvision's `decode_jpeg` and "
        "resizes, crops and rounds them as tensor ops; `decode=\"cpu\"` is the PIL path. Pixel "
        "columns: absolute difference of the uint8 model input (after resize and crop, grey "
        "levels of 255) against the PIL path with full-size decoding, over the JPEGs the tensor "
        "path takes (PNG and other files take the PIL path on both). *draft*: against the PIL "
        "path's default draft decoding. Cosine: per image, tensor vs PIL embeddings, same model "
        "on the CPU. Random weights: the cosine shows how far inputs move the features, not "
        "accuracy. nvJPEG (CUDA) was **not measured** here: no GPU in this session.", "",
        f"Command: `{command}`  ", machine_line(), "",
        "| images | model | n | mean abs. px | max abs. px | px exact | draft mean abs. px | "
        "cosine min | cosine median | cosine min vs draft |",
        "|---|---|---|---|---|---|---|---|---|---|", *table])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-generated", type=int, default=24,
                        help="generated JPEGs per size (256 and 1024 px)")
    parser.add_argument("--models", nargs="*", default=["clipsei-tiny", "ViT-B-32"])
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md section")
    args = parser.parse_args(argv)
    command = "python benchmarks/decode_equivalence.py " + " ".join(argv or sys.argv[1:])
    rows = run(args.n_generated, tuple(args.models))
    if args.write:
        write_section("decode_equivalence", to_markdown(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
