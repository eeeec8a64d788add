"""Thumbnails for the report: which rows get one, and each as an inline JPEG data URI.

Low-range 8-bit images (e.g. medical exports stored as grey levels 0-2) are contrast-stretched
for display, so they do not show black; the pixels a scan uses are never changed.
"""

from __future__ import annotations

import base64
import io
import logging

import numpy as np

logger = logging.getLogger(__name__)

NEIGHBOURS_SHOWN = 5
LOW_RANGE = 32  # thumbnails whose pixel values span fewer levels are stretched for display


def thumbnail_rows(issues, neighbor_ids, page_size: int, limit: int) -> list:
    """Rows to inline: flagged ones by rank, each followed by its neighbours, then the first
    page of the rest, until ``limit`` rows are chosen."""
    order = np.argsort(issues["rank"].to_numpy(), kind="stable")
    flagged = issues["is_label_issue"].to_numpy(bool)
    first_unflagged = order[~flagged[order]][:page_size]
    chosen: dict = {}
    for row in list(order[flagged[order]]) + list(first_unflagged):
        chosen.setdefault(int(row), None)
        if neighbor_ids is not None and flagged[row]:
            for neighbour in np.asarray(neighbor_ids[row])[:NEIGHBOURS_SHOWN]:
                if neighbour >= 0:
                    chosen.setdefault(int(neighbour), None)
        if len(chosen) >= limit:
            break
    return list(chosen)[:limit]


def encode_thumbnails(source, rows: list, size: int) -> tuple:
    """``source[row]`` is a file path, a PIL image or a uint8 array; returns (row -> data URI,
    how many were contrast-stretched)."""
    from ..images.data import array_to_image, load_image, to_rgb

    thumbs, n_stretched = {}, 0
    for row in rows:
        item = source[row]
        try:
            if isinstance(item, np.ndarray):
                image = array_to_image(item)
            elif hasattr(item, "mode"):
                image = to_rgb(item.copy())
            else:
                image = load_image(item)
        except (OSError, ValueError) as err:
            logger.warning("no thumbnail for row %d: %s", row, err)
            continue
        image.thumbnail((size, size))
        image, stretched = _stretch_low_range(image)
        n_stretched += stretched
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        thumbs[str(row)] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    logger.info("inlined %d thumbnails (%d contrast-stretched)", len(thumbs), n_stretched)
    return thumbs, n_stretched


def _stretch_low_range(image) -> tuple:
    """Map an 8-bit image whose values span 1 to ``LOW_RANGE - 1`` levels onto 0..255
    (min-max), so that e.g. files stored as 0-2 are not black; returns (image, stretched)."""
    from PIL import Image

    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        return image, False
    channels = pixels.reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1)
    span = int(np.ptp(channels, axis=0).max())  # a flat colour has span 0 and stays
    if not 0 < span < LOW_RANGE:
        return image, False
    low, high = int(pixels.min()), int(pixels.max())
    scaled = (pixels.astype(np.float32) - low) * (255.0 / max(high - low, 1))
    return Image.fromarray(scaled.round().astype(np.uint8), mode=image.mode), True
