"""Class folders -> image paths and labels: which files and folders of a dataset are images."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from .._paths import is_clipsei_output

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


def list_class_folders(root: Path):
    """The images of ``root``'s class subfolders: (paths, labels (N,) int64, class_names).

    Class names are the visible subfolders' names, sorted; each real directory is walked
    once; hidden files and folders, clipsei output folders and folders without images are
    skipped, and files that are not images by their suffix are counted in one warning.
    """
    candidates = sorted(p for p in root.iterdir() if _is_class_dir(p))
    if not candidates:
        raise ValueError(f"folder {root} has no class subfolders (expected root/<class>/<image>)")
    stray = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if stray:
        warnings.warn(f"{len(stray)} images directly in {root} (e.g. {stray[0]}) have no class "
                      "folder and are ignored", UserWarning, stacklevel=4)
    visited = {os.path.realpath(root)} | {os.path.realpath(p) for p in candidates}
    paths, labels, class_dirs, read, skipped = [], [], [], {}, []
    for class_dir in candidates:
        real = os.path.realpath(class_dir)
        if real in read:
            warnings.warn(f"class folder {class_dir} is the same folder as {read[real]}; "
                          "skipping it", UserWarning, stacklevel=4)
            continue
        read[real] = class_dir
        not_images: list = []
        files = _list_images(class_dir, visited, not_images)
        if not files:
            others = (f"; its {len(not_images)} files are not images by their suffix, e.g. "
                      f"{Path(not_images[0]).name}" if not_images else "")
            warnings.warn(f"class folder {class_dir} holds no image files; skipping it (it is "
                          f"not a class{others})", UserWarning, stacklevel=4)
            continue
        paths.extend(files)
        skipped.extend(not_images)
        labels.extend([len(class_dirs)] * len(files))
        class_dirs.append(class_dir)
    _warn_skipped_files(skipped)
    _warn_split_layout(root, class_dirs)
    class_names = [printable(class_dir.name) for class_dir in class_dirs]
    if len(class_names) < 2:
        raise ValueError(f"folder {root} must hold images of at least 2 classes; found "
                         f"{len(class_names)} class folder(s) with images ({len(paths)} images)")
    return paths, np.asarray(labels, dtype=np.int64), class_names


def _is_class_dir(path: Path) -> bool:
    """A visible folder that clipsei did not write (output folders carry the marker)."""
    return path.is_dir() and not path.name.startswith(".") and not is_clipsei_output(path)


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (a file name in another encoding) shown as
    ``\\xNN``, so that CSV, JSON and HTML outputs can hold it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _warn_split_layout(root: Path, class_dirs: list) -> None:
    """Warn when the class folders hold like-named subfolders (train/cat, test/cat): the
    classes are then most likely splits, one level too high."""
    seen = Counter(name for class_dir in class_dirs for name in
                   {p.name for p in class_dir.iterdir() if _is_class_dir(p)})
    shared = sorted(printable(name) for name, count in seen.items() if count > 1)
    if len(shared) >= 2:
        names = [printable(class_dir.name) for class_dir in class_dirs]
        warnings.warn(f"the class folders of {root} ({', '.join(names[:5])}) hold "
                      f"subfolders with the same names ({', '.join(shared[:5])}): if those are "
                      f"the classes, scan each split's folder (e.g. {class_dirs[0]}) or "
                      "list every image in a manifest with a split column", UserWarning,
                      stacklevel=5)


def _warn_skipped_files(skipped: list) -> None:
    """One warning counting the class folders' files that are not images by their suffix."""
    if not skipped:
        return
    counts = pd.Series([Path(p).suffix.lower() or "(no suffix)" for p in skipped]).value_counts()
    shown = ", ".join(f"{n} {suffix}" for suffix, n in counts.head(5).items())
    warnings.warn(f"skipped {len(skipped)} files in the class folders that are not images by "
                  f"their suffix ({shown}; e.g. {skipped[0]}); clipsei reads "
                  f"{', '.join(sorted(IMAGE_EXTENSIONS))}", UserWarning, stacklevel=5)


def _list_images(folder: Path, visited: set, skipped: list) -> list:
    """Image files under ``folder`` (symlinks followed), skipping directories in ``visited``
    (real paths, updated in place) so that a symlink loop is walked once; visible files that
    are not images by their suffix are appended to ``skipped``."""
    found = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(subdirs):
            real = os.path.realpath(os.path.join(directory, name))
            if _is_class_dir(Path(directory, name)) and real not in visited:
                visited.add(real)
                kept.append(name)
        subdirs[:] = kept
        visible = [os.path.join(directory, f) for f in sorted(files) if not f.startswith(".")]
        for path in visible:
            is_image = Path(path).suffix.lower() in IMAGE_EXTENSIONS
            (found if is_image else skipped).append(path)
    return [os.path.abspath(p) for p in found]
