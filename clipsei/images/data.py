"""Images and their labels: folder / manifest / lists / arrays / HF dataset -> ``ImageTable``.

Also the one place that decodes image files (``load_image``): every PIL mode becomes 8-bit RGB,
EXIF orientation is applied and decompression bombs are refused before any pixel is decoded.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .._validation import check_labels
from .folders import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from .folders import list_class_folders

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet", ".pq"})
MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit (about 0.25 GB at 24 bits/pixel)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


class ImageDecodeError(ValueError):
    """An image file that cannot be turned into RGB pixels; the message says why."""


@dataclass
class ImageTable:
    """N labelled images, either as file paths or in memory.

    paths:       N file paths (absolute), or None when ``images`` holds the pixels.
    labels:      (N,) int64 in [0, K).
    class_names: K names; ``class_names[k]`` is the name of label k.
    groups:      (N,) optional group per image (e.g. patient id), or None.
    images:      (N, H, W[, C]) uint8 array or a sequence of N PIL images, or None.
    splits:      (N,) optional split name per image (train/val/test), or None; duplicates
                 across splits are reported as leakage.
    """

    paths: list | None
    labels: np.ndarray
    class_names: list
    groups: np.ndarray | None = None
    images: object = None
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def describe(self, index: int) -> str:
        """A human-readable name for row ``index``: its path, or ``<images>[index]``."""
        return self.paths[index] if self.paths is not None else f"<images>[{index}]"


def load_image_table(source, *, labels=None, manifest=None, groups=None,
                     class_names=None) -> ImageTable:
    """Build an ``ImageTable`` from ``source``.

    source: a folder (one subfolder per class, class names sorted; hidden folders, clipsei
        output folders and class folders without images are skipped), a CSV/Parquet manifest
        (columns ``path,label[,group][,split]``, paths relative to the manifest), a list of image
        paths, a uint8 array (N, H, W[, C]), or a Hugging Face ``datasets.Dataset`` with
        ``image`` and ``label`` columns.
    labels: (N,) ints or class-name strings, required for lists and arrays.
    manifest: with a folder ``source``, a CSV/Parquet manifest whose paths are read relative
        to that folder (instead of the class subfolders).
    groups: (N,) optional group ids for lists and arrays.
    class_names: names for label ints, or the order of class-name strings.
    """
    _check_label_source(source, labels, manifest)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"source not found: {path}")
        if manifest is not None:
            return _from_manifest(check_manifest_path(manifest), root=path,
                                  class_names=class_names)
        if path.is_dir():
            return _from_folder(path)
        return _from_manifest(check_manifest_path(path), root=path.parent, class_names=class_names)
    if isinstance(source, np.ndarray):
        return _from_array(source, labels, groups, class_names)
    if hasattr(source, "column_names") and hasattr(source, "features"):
        return _from_hf_dataset(source, class_names)
    if isinstance(source, (list, tuple)):
        return _from_path_list(source, labels, groups, class_names)
    raise TypeError(
        "source must be a folder, a manifest path, a list of paths, a uint8 array or a "
        f"datasets.Dataset; got {type(source).__name__}"
    )


def _check_label_source(source, labels, manifest) -> None:
    """Refuse a manifest path given as ``labels`` and labels the source would ignore."""
    if isinstance(labels, (str, os.PathLike)):
        raise TypeError(f"labels must be an (N,) array of labels; got the path {labels!r}. "
                        "Pass a manifest file as manifest=")
    is_path = isinstance(source, (str, os.PathLike))
    if manifest is not None and not (is_path and Path(source).is_dir()):
        raise ValueError("manifest= needs source to be a folder (the manifest's paths are read "
                         f"relative to it); got source {source!r}")
    if labels is not None and is_path:
        raise ValueError(f"labels= cannot be used with source {source!r}: a folder's labels "
                         "come from its class subfolders or manifest=, a manifest's from its "
                         "label column")


def load_image(path) -> Image.Image:
    """Decode the image file at ``path`` into an 8-bit RGB PIL image.

    Raises ``FileNotFoundError`` for a missing file and ``ImageDecodeError`` (a ValueError)
    for an empty, unreadable, truncated or oversized (decompression bomb) file.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return decode_image_bytes(data)


def decode_image_bytes(data: bytes, *, min_size: tuple | None = None) -> Image.Image:
    """Decode encoded image bytes into 8-bit RGB; see ``load_image`` for the errors.

    min_size: (width, height) or None. A JPEG larger than twice this is decoded at the
        smallest DCT scale (1/2, 1/4 or 1/8) that keeps both sides at least this large
        (PIL's draft mode): a 1024-px photo headed for a 224-px model input decodes about
        four times faster. None, or another format, decodes at full size.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(
                    f"decompression bomb refused: {width}x{height} pixels > {MAX_PIXELS}"
                )
            if min_size is not None:
                image.draft(None, tuple(min_size))  # a no-op for formats other than JPEG
            image.load()
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"decompression bomb refused: {err}") from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError("not an image file PIL can read") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        if isinstance(err, ImageDecodeError):
            raise
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from err
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit, 32-bit and float images are min-max stretched to 0-255 (a constant image becomes
    black); alpha is composited over white; palette, CMYK, grey and others use PIL's converters.
    """
    if image.mode in _WIDE_MODES:
        image = _stretch_to_8bit(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def array_to_image(array: np.ndarray) -> Image.Image:
    """One uint8 image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> RGB PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    return to_rgb(Image.fromarray(np.ascontiguousarray(array), mode=mode))


def _stretch_to_8bit(pixels: np.ndarray) -> Image.Image:
    pixels = pixels.astype(np.float64)
    low, high = np.nanmin(pixels), np.nanmax(pixels)
    scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.nan_to_num(scaled).round().astype(np.uint8), mode="L")


# --- sources ---------------------------------------------------------------------------------


def _from_folder(root: Path) -> ImageTable:
    paths, labels, class_names = list_class_folders(root)
    return ImageTable(paths=paths, labels=labels, class_names=class_names)


def check_manifest_path(manifest, *, what: str = "manifest") -> Path:
    """``manifest`` as a Path: an existing CSV or Parquet file, else a one-line error."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{what} not found: {manifest}")
    if manifest.suffix.lower() not in MANIFEST_EXTENSIONS:
        raise ValueError(f"{what} {manifest} must be one of {sorted(MANIFEST_EXTENSIONS)}; "
                         f"got suffix {manifest.suffix!r}")
    return manifest


def read_manifest(manifest: Path, *, what: str = "manifest", text_columns=("path",),
                  keep_default_na: bool = True) -> pd.DataFrame:
    """The table of a checked ``manifest`` (CSV or Parquet; ``text_columns`` read as text;
    ``keep_default_na=False`` keeps CSV cells such as "NA" as text); a malformed file is a
    one-line ``ValueError``."""
    try:
        if manifest.suffix.lower() == ".csv":
            return pd.read_csv(manifest, dtype=dict.fromkeys(text_columns, str),
                               keep_default_na=keep_default_na)
        return pd.read_parquet(manifest)
    except ImportError as err:
        raise ImportError(
            f"reading {manifest} needs pyarrow: pip install 'clipsei[parquet]'") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {manifest} is not UTF-8 text (byte "
                         f"{err.object[err.start]:#x} is not UTF-8); save it as UTF-8 CSV") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        raise ValueError(f"malformed {what} {manifest}: {err}") from err


def _from_manifest(manifest: Path, *, root: Path, class_names=None) -> ImageTable:
    frame = read_manifest(manifest, keep_default_na=False)  # a class named "NA" or "None" is text
    frame = frame.mask(frame.astype(str).apply(lambda column: column.str.strip() == ""))
    frame.columns = [str(column).strip() for column in frame.columns]  # "path, label"
    missing_columns = {"path", "label"} - set(frame.columns)
    if missing_columns:
        separator = next((c for c in ";\t|" if c in "".join(map(str, frame.columns))), None)
        hint = f" (is it separated by {separator!r}? commas are read)" if separator else ""
        raise ValueError(f"manifest {manifest} must have columns path,label[,group][,split]; "
                         f"missing {sorted(missing_columns)}, found {list(frame.columns)}{hint}")
    line = 2 if manifest.suffix.lower() == ".csv" else 0  # CSV line of row 0 (after the header)
    empty = frame["path"].isna() | frame["label"].isna()
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(
            f"manifest {manifest} row {row}{_line(line, row)} has an empty path or label")
    paths = [os.path.abspath(root / p) for p in frame["path"].astype(str)]
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        shown = "; ".join(f"row {i}{_line(line, i)}: {paths[i]}" for i in missing[:3])
        raise ValueError(f"manifest {manifest} names {len(missing)} missing file(s): {shown}"
                         f"{'; ...' if len(missing) > 3 else ''}")
    _warn_repeated_paths(paths, manifest, line)
    values = frame["label"]
    whole = values.dtype.kind in "iu" or (values.dtype.kind == "f" and (values % 1 == 0).all())
    if not whole:  # names: True/False or 0.5 too; " cat" (a space after the comma) is "cat"
        values = values.astype(str).str.strip()
    labels, names = _encode_labels(values.to_numpy(), class_names, f"manifest {manifest}",
                                   names_from_values=class_names is None)
    groups = frame["group"].to_numpy() if "group" in frame.columns else None
    splits = None
    if "split" in frame.columns:
        if frame["split"].isna().any():
            row = int(np.flatnonzero(frame["split"].isna().to_numpy())[0])
            raise ValueError(f"manifest {manifest} row {row}{_line(line, row)} has an empty split")
        splits = frame["split"].astype(str).to_numpy(dtype=object)
    return ImageTable(paths=paths, labels=labels, class_names=names, groups=groups,
                      splits=splits)


def _warn_repeated_paths(paths: list, manifest: Path, line: int) -> None:
    """Warn when the manifest lists one image file on more than one row."""
    first: dict = {}
    repeats = [(first[path], row) for row, path in enumerate(paths)
               if first.setdefault(path, row) != row]
    if repeats:
        row, again = repeats[0]
        warnings.warn(f"manifest {manifest} lists {len(repeats)} image(s) more than once (e.g. "
                      f"{paths[row]} on row {row}{_line(line, row)} and row {again}"
                      f"{_line(line, again)}); each row is scored as a separate image",
                      UserWarning, stacklevel=4)


def _line(first_line: int, row: int) -> str:
    return f" (line {first_line + row})" if first_line else ""


def _from_path_list(paths, labels, groups, class_names) -> ImageTable:
    if labels is None:
        raise ValueError("labels are required when source is a list of paths")
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) not found: {missing[:3]}")
    labels, names = _encode_labels(np.asarray(labels), class_names, "labels")
    return ImageTable(paths=paths, labels=_check_length(labels, len(paths)),
                      class_names=names, groups=_check_groups(groups, len(paths)))


def _from_array(images: np.ndarray, labels, groups, class_names) -> ImageTable:
    if images.dtype != np.uint8:
        raise TypeError(f"source images must be a uint8 array; got dtype {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise ValueError("source images must have shape (N, H, W) or (N, H, W, C) with C in "
                         f"(1, 3, 4); got {images.shape}")
    if labels is None:
        raise ValueError("labels are required when source is an array of images")
    labels, names = _encode_labels(np.asarray(labels), class_names, "labels")
    return ImageTable(paths=None, labels=_check_length(labels, len(images)), class_names=names,
                      groups=_check_groups(groups, len(images)), images=images)


def _from_hf_dataset(dataset, class_names) -> ImageTable:
    for column in ("image", "label"):
        if column not in dataset.column_names:
            raise ValueError("dataset must have 'image' and 'label' columns; "
                             f"got {dataset.column_names}")
    feature = dataset.features["label"]
    names = class_names if class_names is not None else getattr(feature, "names", None)
    labels, names = _encode_labels(np.asarray(dataset["label"]), names, "dataset['label']")
    return ImageTable(paths=None, labels=labels, class_names=names, images=_ColumnView(dataset))


class _ColumnView:
    """Lazy sequence over a dataset's ``image`` column (decodes one row at a time)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[int(index)]["image"]

    @property
    def fingerprint(self):
        """The dataset's content fingerprint (``datasets`` keeps one), or None."""
        return getattr(self.dataset, "_fingerprint", None)


def _encode_labels(values: np.ndarray, class_names, where: str, *, names_from_values=False):
    """Class-name strings or ints -> (labels (N,) int64, class_names).

    names_from_values: integer labels are names (a manifest's), not indices: the classes are
    the values present, in numeric order, so labels 1 and 2 make two classes, not three.
    """
    if values.dtype.kind in "OUS":
        strings = values.astype(str)
        names = list(class_names) if class_names is not None else sorted(set(strings.tolist()))
        index = {name: k for k, name in enumerate(names)}
        unknown = sorted(set(strings.tolist()) - set(index))
        if unknown:
            raise ValueError(f"{where} has labels not in class_names {names}: {unknown[:5]}")
        labels = np.asarray([index[s] for s in strings], dtype=np.int64)
    else:
        labels = check_labels(values, name=where)
        if names_from_values:
            present, labels = np.unique(labels, return_inverse=True)
            class_names = [str(value) for value in present]
        names = list(class_names) if class_names is not None else [
            str(k) for k in range(int(labels.max(initial=-1)) + 1)]
        labels = check_labels(labels, n_classes=len(names), name=where)
    if np.unique(labels).size < 2:
        raise ValueError(f"{where} must contain at least 2 classes; got {np.unique(labels).size}")
    return labels, [str(n) for n in names]


def _check_length(labels: np.ndarray, n_images: int) -> np.ndarray:
    if labels.shape[0] != n_images:
        raise ValueError(
            f"labels must have one entry per image ({n_images}); got {labels.shape[0]}")
    return labels


def _check_groups(groups, n_images: int):
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n_images,):
        raise ValueError(f"groups must have shape ({n_images},); got {groups.shape}")
    return groups
