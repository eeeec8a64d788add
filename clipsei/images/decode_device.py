"""Batched JPEG decoding on the model's device: the ``decode="device"`` path of ``embed_images``.

DataLoader workers only read files and hash them; the main process decodes a batch of JPEGs
with ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG on CUDA, libjpeg-turbo on the
CPU), then takes the image properties, applies the intensity option and resizes, centre-crops
and rounds to uint8 as tensor ops on that device, as open_clip's PIL preprocess does.
``_encode_image_batch`` then normalises the uint8 batch as on the PIL path. Every file that is
not a plain, complete, upright 8-bit JPEG, and every JPEG the decoder rejects, takes the PIL
path (:mod:`clipsei.images.decode`) instead, with the same failure reasons.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .content_hash import hash_jpeg
from .data import MAX_PIXELS, ImageDecodeError, decode_image_bytes
from .decode import ImageDataset, collate_images, split_preprocess
from .intensity import WINDOW_PERCENTILES, apply_intensity
from .properties import PROPERTY_NAMES, PROPERTY_SIZE, compute_image_properties

DECODE_OPTIONS = ("auto", "cpu", "device")
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # as compute_image_properties
_EXIF_ORIENTATION = 0x0112
# preprocess steps after CenterCrop that the tensor path covers: RGB conversion and ToTensor
# (a no-op on RGB uint8 tensors), Normalize (done by _encode_image_batch)
_TAIL_STEPS = ("MaybeConvertMode", "_convert_to_rgb", "MaybeToTensor", "ToTensor", "Normalize")


@dataclass(frozen=True)
class TensorPreprocess:
    """open_clip's ``Resize(size), CenterCrop(crop)`` as tensor ops.

    size: the shorter side after resizing, pixels. crop: (height, width) of the centre crop.
    interpolation: a ``torchvision.transforms.InterpolationMode``. antialias: as the Resize.
    """

    size: int
    crop: tuple
    interpolation: object
    antialias: bool


def check_decode(decode) -> str:
    """Return ``decode`` if it is one of :data:`DECODE_OPTIONS`, else raise ValueError."""
    if decode not in DECODE_OPTIONS:
        raise ValueError(f"decode must be one of {list(DECODE_OPTIONS)}; got {decode!r}")
    return decode


def tensor_preprocess(preprocess) -> TensorPreprocess | None:
    """The tensor form of an eval preprocess ``Resize(int), CenterCrop, [RGB], ToTensor,
    Normalize`` (open_clip's ``resize_mode="shortest"``), or None for any other shape."""
    from torchvision import transforms

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 3 or split_preprocess(preprocess).mean is None:
        return None
    resize, crop, tail = steps[0], steps[1], steps[2:]
    if type(resize) is not transforms.Resize or type(crop) is not transforms.CenterCrop:
        return None
    size = resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 \
        else resize.size
    if not isinstance(size, int) or resize.max_size is not None:
        return None
    if any(getattr(step, "__name__", type(step).__name__) not in _TAIL_STEPS for step in tail):
        return None
    crop_size = tuple(crop.size) if len(crop.size) == 2 else (crop.size[0],) * 2
    return TensorPreprocess(size, crop_size, resize.interpolation, bool(resize.antialias))


def use_device_decode(decode: str, device: torch.device, preprocess) -> bool:
    """Whether ``embed_images`` takes the tensor path: "cpu" never, "device" always (a
    ValueError when the preprocess has no tensor form), "auto" when ``device`` is CUDA and
    the preprocess has one."""
    check_decode(decode)
    if decode == "cpu":
        return False
    supported = tensor_preprocess(preprocess) is not None
    if decode == "device" and not supported:
        raise ValueError("decode='device' needs a preprocess of Resize(int), CenterCrop, "
                         f"ToTensor, Normalize; this model's is {preprocess}")
    return supported and (decode == "device" or torch.device(device).type == "cuda")


def device_decodable(data: bytes) -> bool:
    """True for a complete 8-bit grey or YCbCr JPEG without EXIF rotation and under
    :data:`~clipsei.images.data.MAX_PIXELS` (reads the header only); other files take the
    PIL path, which handles CMYK, rotation, truncation and bombs as it always has."""
    if not data.startswith(b"\xff\xd8") or data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return False
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                return (header.format == "JPEG" and header.mode in ("L", "RGB")
                        and 0 < width * height <= MAX_PIXELS
                        and header.getexif().get(_EXIF_ORIENTATION, 1) == 1)
    except Exception:  # noqa: BLE001 - any header PIL cannot read goes to the PIL path
        return False


class JpegBytesDataset(ImageDataset):
    """:class:`~clipsei.images.decode.ImageDataset` whose plain JPEG files come back undecoded:
    (row, (L,) uint8 tensor of the file's bytes, content hash). Any other item is
    ImageDataset's 5-tuple from the PIL path."""

    def __getitem__(self, position: int):
        row = int(self.rows[position])
        if self.table.paths is None:
            return self._item(row)
        try:
            with open(self.table.paths[row], "rb") as handle:
                data = handle.read()
        except OSError:
            return self._item(row)  # reports the failure as the PIL path does
        if not device_decodable(data):
            return self._item(row, data)
        # orientation 1: device_decodable turned the others to the PIL path
        return row, torch.frombuffer(bytearray(data), dtype=torch.uint8), hash_jpeg(data)


def collate_jpeg_bytes(items):
    """-> (the PIL-path items through :func:`collate_images`, [(row, bytes, hash)] JPEGs)."""
    jpegs = [item for item in items if len(item) == 3]
    return collate_images([item for item in items if len(item) != 3]), jpegs


def decode_batches(loader, plan: TensorPreprocess, device: torch.device, *, on_worker,
                   intensity: str = "none", properties: bool = True):
    """Batches of ``collate_jpeg_bytes`` -> the 5-tuples of ``collate_images``, the JPEGs
    decoded and preprocessed on ``device``: (rows, (B, 3, H, W) uint8 tensor or None,
    hashes, [(row, reason)] failures, (B, P) float32 properties)."""
    for (rows, batch, hashes, failed, stats), jpegs in loader:
        if jpegs:
            new_rows, pixels, new_hashes, new_failed, new_stats = _decode_jpegs(
                jpegs, plan, device, on_worker=on_worker, intensity=intensity,
                properties=properties)
            if new_rows:
                batch = pixels if batch is None else torch.cat([batch.to(device), pixels])
                rows, hashes = list(rows) + new_rows, list(hashes) + new_hashes
                stats = np.concatenate([stats, new_stats])
            failed = list(failed) + new_failed
        yield rows, batch, hashes, failed, stats


def _decode_jpegs(jpegs, plan, device, *, on_worker, intensity, properties):
    """[(row, bytes, hash)] -> (rows, (B, 3, H, W) uint8 on ``device``, hashes, failures,
    (B, P) properties); a JPEG the device decoder rejects goes through PIL here."""
    images = decode_jpeg_list([item[1] for item in jpegs], device)
    rows, pixels, hashes, failed, stats = [], [], [], [], []
    for (row, data, content_hash), image in zip(jpegs, images):
        if image is None:  # rare: decode it the PIL way, with the PIL path's failure reasons
            try:
                pil = decode_image_bytes(bytes(data.numpy()))
            except Exception as err:  # noqa: BLE001 - reported per image, as on the PIL path
                failed.append((row, str(err) if isinstance(err, ImageDecodeError)
                               else f"{type(err).__name__}: {err}"))
                continue
            stat = torch.as_tensor(compute_image_properties(pil) if properties else _nan())
            pixel = on_worker(apply_intensity(pil, intensity)).to(device)
        else:
            stat = compute_properties_tensor(image) if properties else torch.as_tensor(_nan())
            if intensity == "window":
                image = window_tensor(image)
            pixel = resize_crop(image, plan)
        rows.append(row)
        hashes.append(content_hash)
        pixels.append(pixel)
        stats.append(stat.to(device))
    if not rows:
        return [], None, [], failed, np.zeros((0, len(PROPERTY_NAMES)), np.float32)
    return (rows, torch.stack(pixels), hashes, failed,
            torch.stack(stats).cpu().numpy().astype(np.float32))


def _nan() -> np.ndarray:
    return np.full(len(PROPERTY_NAMES), np.nan, dtype=np.float32)


def decode_jpeg_list(datas: list, device) -> list:
    """JPEG bytes ((L,) uint8 CPU tensors) -> (3, H, W) uint8 RGB tensors on ``device``, None
    for each one the decoder rejects. One batched call; on CUDA one bad file fails the
    whole call, so then each file is decoded on its own."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: see TorchCodec
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            images = []
            for data in datas:
                try:
                    images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
            return images


def resize_crop(image: torch.Tensor, plan: TensorPreprocess) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, crop_h, crop_w) uint8: shorter side to ``plan.size``, centre
    crop. torchvision resizes uint8 natively on the CPU (after Pillow's algorithm) and in
    float32, then rounds, on CUDA."""
    from torchvision.transforms.v2 import functional as F

    pixels = F.resize(image[None], [plan.size], interpolation=plan.interpolation,
                      antialias=plan.antialias)  # uint8 kernel on the CPU, float32 on CUDA
    return F.center_crop(pixels, list(plan.crop))[0]


def compute_properties_tensor(image: torch.Tensor) -> torch.Tensor:
    """:func:`~clipsei.images.properties.compute_image_properties` of a (3, H, W) uint8 RGB
    tensor, on its device -> (len(PROPERTY_NAMES),) float32 tensor (no host sync)."""
    height, width = image.shape[1:]
    factor = max(height, width) // PROPERTY_SIZE
    rgb = (_reduce(image, factor) if factor > 1 else image).float() / 255.0
    weights = torch.tensor(_GREY_WEIGHTS, dtype=torch.float32, device=image.device)
    grey = torch.einsum("chw,c->hw", rgb, weights)
    counts = torch.bincount((grey * 255 + 0.5).clamp(0, 255).long().flatten(), minlength=256)
    shares = counts.float() / counts.sum()
    entropy = -torch.special.xlogy(shares, shares).sum() / math.log(2)
    variance = grey.var(unbiased=False)
    laplacian = (_laplacian(grey).var(unbiased=False) if min(grey.shape) >= 3
                 else torch.zeros((), device=image.device))
    sharpness = torch.where(variance > 1e-8, laplacian / variance.clamp_min(1e-8),
                            torch.full_like(variance, float("nan")))
    colorfulness = (rgb.amax(0) - rgb.amin(0)).mean()
    size = torch.tensor([width, height], dtype=torch.float32, device=image.device)
    return torch.cat([size, torch.stack([grey.mean(), variance.sqrt(), entropy, sharpness,
                                         colorfulness])])


def _reduce(image: torch.Tensor, factor: int) -> torch.Tensor:
    """PIL's ``Image.reduce(factor)`` of a (C, H, W) uint8 tensor, to the same integers: box
    means over whole and edge boxes in PIL's fixed-point rounding."""
    channels, height, width = image.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padding = (0, cols * factor - width, 0, rows * factor - height)
    padded = torch.nn.functional.pad(image, padding) if any(padding) else image
    boxes = padded.reshape(channels, rows, factor, cols, factor)
    sums = boxes.sum(4, dtype=torch.int32).sum(2).long()  # exact: at most 255 * factor**2
    row_counts = torch.full((rows,), factor, dtype=torch.int64, device=image.device)
    col_counts = torch.full((cols,), factor, dtype=torch.int64, device=image.device)
    row_counts[-1], col_counts[-1] = height - factor * (rows - 1), width - factor * (cols - 1)
    counts = row_counts[:, None] * col_counts[None, :]
    return ((sums + counts // 2) * ((1 << 24) // counts)) >> 24


def _laplacian(grey: torch.Tensor) -> torch.Tensor:
    return (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
            - 4 * grey[1:-1, 1:-1])


def window_tensor(image: torch.Tensor, *, percentiles=WINDOW_PERCENTILES) -> torch.Tensor:
    """:func:`~clipsei.images.intensity.window_intensity` of a (C, H, W) uint8 tensor: the
    (low, high) percentiles of all its values (numpy's linear method, from a histogram)
    stretched to 0-255; unchanged when the image is constant."""
    counts = torch.bincount(image.flatten().long(), minlength=256)
    ends = counts.cumsum(0)  # ends[v]: how many values are <= v
    n = image.numel()

    def value_at(rank: int) -> torch.Tensor:  # the rank-th smallest value (0-based)
        return torch.searchsorted(ends, torch.tensor([rank], device=ends.device), right=True)[0]

    def percentile(q: float) -> float:
        index = q / 100.0 * (n - 1)
        below = math.floor(index)
        low = value_at(below).double()
        high = value_at(min(below + 1, n - 1)).double()
        return float(low + (high - low) * (index - below))

    low, high = (percentile(q) for q in percentiles)
    if high <= low:
        low, high = float(image.min()), float(image.max())
    if high <= low:
        return image
    low32 = torch.tensor(low, dtype=torch.float32, device=image.device)
    scale = torch.tensor(255.0, dtype=torch.float32) / torch.tensor(high - low,
                                                                     dtype=torch.float32)
    stretched = (image.float() - low32) * scale.to(image.device)
    return stretched.round_().clamp_(0, 255).to(torch.uint8)
