"""First scan vs fully cached re-scan of the same folder (the bundled tiny model).

The re-scan finds every image and prompt embedding in the cache, so it loads no model
weights (``summary["settings"]["model_loaded"]`` is False) and costs only the scoring.
Random-weight model: a timing check, not a detector.

Run: ``python benchmarks/rescan_speed.py [--n-images 200] [--write]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _write_images(folder: Path, n_images: int, seed: int = 0) -> None:
    """``n_images`` 64 x 64 PNG files in two class folders (seeded noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n_images):
        target = folder / ("a" if i % 2 else "b")
        target.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target / f"{i:05d}.png")


def _timed_scan(images: Path, cache: Path, out: Path):
    from clipsei.pipeline import scan

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning
        result = scan(images, model="clipsei-tiny", pretrained="none", device="cpu",
                      cache_dir=cache, out=out, progress=False)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args(argv)
    import open_clip  # noqa: F401 - imports are paid before the clocks start, for both scans
    import torch  # noqa: F401

    import clipsei.pipeline  # noqa: F401
    from clipsei.engine import detect  # noqa: F401
    from clipsei.images import embed, rescan  # noqa: F401
    from clipsei.report import html  # noqa: F401
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write_images(root / "images", args.n_images)
        first_s, first = _timed_scan(root / "images", root / "cache", root / "first")
        again_s, again = _timed_scan(root / "images", root / "cache", root / "again")
    same = again.issues["label_score"].equals(first.issues["label_score"])
    line = (f"{args.n_images} PNG images, clipsei-tiny on the CPU: first scan {first_s:.1f} s "
            f"(model loaded: {first.summary['settings']['model_loaded']}, timings "
            f"{_rounded(first.summary['timings_s'])}); cached re-scan {again_s:.1f} s (model "
            f"loaded: {again.summary['settings']['model_loaded']}, timings "
            f"{_rounded(again.summary['timings_s'])}); first / re-scan ratio "
            f"{first_s / again_s:.2f}; identical label scores: {same}")
    print(line)
    if args.write:
        from _docs import machine_line, write_section

        command = "python benchmarks/rescan_speed.py " + " ".join(argv or sys.argv[1:])
        write_section("rescan_speed", "\n".join([
            "## Re-scan from the cache (no model load)", "",
            f"Command: `{command.strip()}`  ", machine_line("cpu"), "", line, ""]))
    return 0


def _rounded(timings: dict) -> dict:
    return {key: round(float(value), 2) for key, value in timings.items()}


if __name__ == "__main__":
    sys.exit(main())
