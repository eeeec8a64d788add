"""Verified labels: the rows of an image table that a manifest of checked images names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def find_trusted_rows(manifest, table_paths, *, source=None) -> np.ndarray:
    """(N,) bool: the rows of ``table_paths`` (N image paths) named in the ``path`` column of
    the CSV ``manifest``. A relative path there is looked up under the manifest's folder,
    then ``source`` (the scanned folder), then the working directory. A one-line
    ``ValueError`` names the file and the first row that matches no image."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"trusted manifest not found: {manifest}")
    try:
        frame = pd.read_csv(manifest)
    except (OSError, ValueError) as err:
        raise ValueError(f"{manifest} is not a readable CSV: {err}") from err
    if "path" not in frame.columns:
        raise ValueError(f"{manifest} needs a 'path' column; it has {list(frame.columns)}")
    rows = {os.path.realpath(path): row for row, path in enumerate(table_paths)}
    mask = np.zeros(len(table_paths), dtype=bool)
    bases = [manifest.parent] + ([Path(source)] if source is not None else []) + [Path.cwd()]
    for line, path in enumerate(frame["path"].astype(str), start=2):
        candidates = [Path(path)] if Path(path).is_absolute() else [b / path for b in bases]
        found = [rows[os.path.realpath(c)] for c in candidates if os.path.realpath(c) in rows]
        if not found:
            raise ValueError(f"{manifest}, row {line}: {path} is not one of the scanned images")
        mask[found[0]] = True
    return mask
