"""Opt-in intensity normalisation of decoded images before they are embedded.

Medical exports often use a handful of grey levels (e.g. 0-2 of 0-255): to CLIP such an image
is black. Percentile windowing stretches each image's own range to the full 0-255.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

INTENSITY_OPTIONS = ("none", "window")
WINDOW_PERCENTILES = (1.0, 99.0)


def check_intensity(intensity) -> str:
    """Return ``intensity`` if it is one of :data:`INTENSITY_OPTIONS`, else raise ValueError."""
    if intensity not in INTENSITY_OPTIONS:
        raise ValueError(f"intensity must be one of {list(INTENSITY_OPTIONS)}; got {intensity!r}")
    return intensity


def apply_intensity(image: Image.Image, intensity: str) -> Image.Image:
    """Apply the ``intensity`` option to an RGB image: "none" returns it as is, "window"
    returns :func:`window_intensity` of it."""
    return window_intensity(image) if intensity == "window" else image


def window_intensity(image: Image.Image, *, percentiles=WINDOW_PERCENTILES) -> Image.Image:
    """Stretch an image's (low, high) percentiles of pixel values to 0-255, clipping outside.

    The percentiles are taken over all pixels and channels together, so colours keep their
    balance. Where they coincide (under 1% of pixels differ from the rest) the minimum and
    maximum are used instead; a constant image is returned unchanged.
    Returns an 8-bit image of the same mode and size.
    """
    pixels = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(pixels, percentiles)
    if high <= low:
        low, high = pixels.min(), pixels.max()
    if high <= low:
        return image
    stretched = (pixels - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.round(stretched), 0, 255).astype(np.uint8))
