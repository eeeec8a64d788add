"""Cheap image statistics computed while an image is decoded, and the issues they reveal.

:func:`compute_image_properties` runs in the decoding workers on the image already in memory
(on a copy reduced to at most :data:`PROPERTY_SIZE` pixels a side), so no image is read twice.
:func:`find_property_issues` flags images that stand out from *their own dataset* by a robust
z-score (see :func:`clipsei._robust.robust_z`), never by an absolute level: X-rays are
grey and dark by nature, and only a chest film much darker than the other films is "dark".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._robust import robust_z

PROPERTY_NAMES = ("width", "height", "brightness", "contrast", "entropy", "sharpness",
                  "colorfulness")
PROPERTY_SIZE = 128
PROPERTY_Z = 3.5  # Iglewicz & Hoaglin's cutoff for the modified z-score
GREY_COLORFULNESS = 0.02  # mean channel spread (of 1) under which an image counts as grey
ISSUE_COLUMNS = ("is_dark", "is_bright", "is_low_information", "is_blurry", "is_odd_size",
                 "is_odd_aspect", "is_grayscale")


def compute_image_properties(image, *, size=None) -> np.ndarray:
    """Statistics of one PIL image -> (len(PROPERTY_NAMES),) float32.

    width, height: pixels of the stored image (``size`` = (width, height) when the decoder
    reduced it, e.g. a JPEG draft). brightness, contrast: mean and standard deviation of the
    grey levels, in [0, 1]. entropy: of the 256-bin grey histogram, bits (0-8). sharpness:
    variance of the 4-neighbour Laplacian over the grey variance (scale-free; a blurred
    copy scores lower). colorfulness: mean per-pixel spread between channels, in [0, 1].
    """
    width, height = size if size is not None else image.size
    factor = max(image.size) // PROPERTY_SIZE
    small = image.reduce(factor) if factor > 1 else image  # box filter: fast, a new image
    rgb = np.asarray(small.convert("RGB"), dtype=np.float32) / 255.0
    grey = rgb @ np.float32([0.299, 0.587, 0.114])
    counts = np.bincount(np.clip(grey * 255 + 0.5, 0, 255).astype(np.int64).ravel(),
                         minlength=256)
    shares = counts[counts > 0] / counts.sum()
    variance = float(grey.var())
    sharpness = float(_laplacian(grey).var() / variance) if variance > 1e-8 else np.nan
    colorfulness = float((rgb.max(axis=2) - rgb.min(axis=2)).mean())
    return np.asarray([width, height, grey.mean(), np.sqrt(variance),
                       -(shares * np.log2(shares)).sum(), sharpness, colorfulness],
                      dtype=np.float32)


def _laplacian(grey: np.ndarray) -> np.ndarray:
    if min(grey.shape) < 3:
        return np.zeros(1, dtype=np.float32)
    return (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
            - 4 * grey[1:-1, 1:-1])


def properties_frame(values) -> pd.DataFrame:
    """(N, len(PROPERTY_NAMES)) values -> a DataFrame with the property names as columns."""
    return pd.DataFrame(np.asarray(values, dtype=np.float32).reshape(-1, len(PROPERTY_NAMES)),
                        columns=list(PROPERTY_NAMES))


def find_property_issues(properties: pd.DataFrame, *, z_cutoff: float = PROPERTY_Z) -> pd.DataFrame:
    """Flag images whose properties stand out from the dataset's; one row per image.

    Each flag is a one-sided robust z beyond ``z_cutoff`` of: log brightness (is_dark), log
    (1 - brightness) (is_bright), the lower of the entropy and contrast z (is_low_information),
    log sharpness (is_blurry), log area (is_odd_size, either way), log aspect ratio (is_odd_aspect).
    is_grayscale: colourless (colorfulness < :data:`GREY_COLORFULNESS`) in a set where most
    images have colour. Rows of NaN (no properties) are never flagged.
    """
    missing = [name for name in PROPERTY_NAMES if name not in properties]
    if missing:
        raise ValueError(f"properties is missing columns {missing}")
    if not float(z_cutoff) > 0:
        raise ValueError(f"z_cutoff must be > 0; got {z_cutoff}")
    p = {name: properties[name].to_numpy(np.float64) for name in PROPERTY_NAMES}
    z = {
        # exposure is multiplicative: darker and brighter are judged on a log scale
        "dark": robust_z(np.log(np.maximum(p["brightness"], 1e-3))),
        "bright": robust_z(np.log(np.maximum(1 - p["brightness"], 1e-3))),
        "information": np.fmin(robust_z(p["entropy"]), robust_z(p["contrast"])),
        "sharpness": robust_z(np.log(np.maximum(p["sharpness"], 1e-6))),
        "area": robust_z(np.log(np.maximum(p["width"] * p["height"], 1))),
        "aspect": robust_z(np.log(np.maximum(p["width"], 1) / np.maximum(p["height"], 1))),
    }
    z = {key: np.nan_to_num(value, nan=0.0) for key, value in z.items()}
    cut = float(z_cutoff)
    grey = p["colorfulness"] < GREY_COLORFULNESS
    colour_set = np.nanmedian(p["colorfulness"]) >= GREY_COLORFULNESS if len(properties) else False
    return pd.DataFrame({
        "is_dark": z["dark"] < -cut, "is_bright": z["bright"] < -cut,
        "is_low_information": z["information"] < -cut, "is_blurry": z["sharpness"] < -cut,
        "is_odd_size": np.abs(z["area"]) > cut, "is_odd_aspect": np.abs(z["aspect"]) > cut,
        "is_grayscale": grey & bool(colour_set),
    }, index=properties.index)
