"""Images -> model input tensors, in DataLoader workers: read, decode, normalise intensity,
and the part of open_clip's preprocess that is cheapest there.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import torch

from .cache import array_key
from .content_hash import hash_jpeg, hash_pixels, is_jpeg
from .data import ImageDecodeError, ImageTable, array_to_image, decode_image_bytes, to_rgb
from .intensity import apply_intensity
from .properties import PROPERTY_NAMES, compute_image_properties

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreprocessPlan:
    """open_clip's eval preprocess split where the work is cheapest.

    on_worker: PIL image -> tensor, run in the decoding processes. For the usual
        ``Resize, CenterCrop, [convert], ToTensor, Normalize`` it stops before ``ToTensor``
        and yields (3, H, W) uint8; ``mean``/``std`` (3,) are then applied by
        ``_encode_image_batch``. Otherwise it is the whole preprocess (float output).
    draft_size: (width, height) a JPEG may be reduced to before decoding, or None when the
        first step is not a plain shorter-side ``Resize``.
    """

    on_worker: object
    mean: tuple | None
    std: tuple | None
    draft_size: tuple | None


@functools.lru_cache(maxsize=8)  # once per model, not once per batch
def split_preprocess(preprocess) -> PreprocessPlan:
    from torchvision import transforms

    steps = list(getattr(preprocess, "transforms", []))
    draft_size = None
    if steps and type(steps[0]) is transforms.Resize:
        size = steps[0].size
        size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
        draft_size = (size, size) if isinstance(size, int) else None
    if (len(steps) >= 2 and isinstance(steps[-1], transforms.Normalize)
            and type(steps[-2]).__name__ in ("ToTensor", "MaybeToTensor")):
        return PreprocessPlan(transforms.Compose([*steps[:-2], PilToUint8()]),
                               tuple(steps[-1].mean), tuple(steps[-1].std), draft_size)
    return PreprocessPlan(preprocess, None, None, draft_size)


class PilToUint8:
    """PIL RGB image -> (3, H, W) uint8 tensor (``ToTensor`` without the float scaling)."""

    def __call__(self, image) -> torch.Tensor:
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), np.uint8)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


class ImageDataset(torch.utils.data.Dataset):
    """Rows ``rows`` of a table -> (row, image tensor or None, content hash, reason,
    properties): the image's :func:`~clipsei.images.properties.compute_image_properties`
    before any intensity change (NaN when ``properties`` is False or it failed)."""

    def __init__(self, table: ImageTable, rows: np.ndarray, preprocess, draft_size=None,
                 intensity: str = "none", properties: bool = True):
        self.table, self.rows, self.preprocess = table, rows, preprocess
        self.draft_size, self.intensity = draft_size, intensity
        self.properties = properties

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, position: int):
        return self._item(int(self.rows[position]))

    def _item(self, row: int, data: bytes | None = None):
        """The item of table row ``row``; ``data``: its file's bytes when already read."""
        no_properties = np.full(len(PROPERTY_NAMES), np.nan, dtype=np.float32)
        try:
            image, content_hash, size = self._read(row, data)
            properties = (compute_image_properties(image, size=size) if self.properties
                          else no_properties)
            image = apply_intensity(image, self.intensity)
            return row, self.preprocess(image), content_hash, "", properties
        except FileNotFoundError:
            return row, None, "", "file not found", no_properties
        except ImageDecodeError as err:
            return row, None, "", str(err), no_properties
        except Exception as err:  # noqa: BLE001 - any per-image failure is reported, not fatal
            return row, None, "", f"{type(err).__name__}: {err}", no_properties

    def _read(self, row: int, data: bytes | None = None):
        """-> (RGB image, content hash (:mod:`clipsei.images.content_hash`: equal for equal
        pixels), (width, height) as stored, before any draft)."""
        if self.table.paths is not None:
            if data is None:
                with open(self.table.paths[row], "rb") as handle:
                    data = handle.read()
            image = decode_image_bytes(data, min_size=self.draft_size)
            size, orientation = _stored_header(data)
            digest = hash_jpeg(data, orientation) if is_jpeg(data) else hash_pixels(image)
            return image, digest, size
        item = self.table.images[row]
        if isinstance(item, np.ndarray):
            image = array_to_image(item)
            return image, array_key(item), image.size
        image = to_rgb(item)
        return image, array_key(np.asarray(item)), image.size


def _stored_header(data: bytes) -> tuple:
    """((width, height) of the encoded image (its header only), turned as EXIF orientation
    5-8 turns the decoded image (never inferred from a draft's size, which may be square);
    the EXIF orientation, 1 when there is none)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
        orientation = header.getexif().get(_EXIF_ORIENTATION, 1)
    return ((height, width) if orientation in (5, 6, 7, 8) else (width, height)), orientation


def collate_images(items):
    """-> (rows, (B, 3, H, W) tensor or None, content hashes, [(row, reason)] of failures,
    (B, P) float32 image properties of the rows)."""
    good = [item for item in items if item[1] is not None]
    batch = torch.stack([item[1] for item in good]) if good else None
    properties = (np.stack([item[4] for item in good]) if good
                  else np.zeros((0, len(PROPERTY_NAMES)), np.float32))
    return ([item[0] for item in good], batch, [item[2] for item in good],
            [(item[0], item[3]) for item in items if item[1] is None], properties)
