"""Verified labels: the rows of an image table that a manifest of checked images names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def read_trusted_manifest(manifest, table, *, source=None) -> dict:
    """``{row: verified label}`` for the rows of the ImageTable ``table`` that the CSV
    ``manifest`` names (paths as :func:`find_trusted_rows`). An optional ``label`` column gives
    the verified class name (one of ``table.class_names``); where it is absent or empty the
    label is verified as given; with an ``inclusion_probability`` column (an audit sheet,
    :func:`clipsei.engine.audit.rank_audit_sample`) each value is ``(label, probability)``.
    A one-line ``ValueError`` names the row of an unknown class or a bad probability."""
    frame = _read(manifest)
    rows = _resolve_rows(Path(manifest), frame, table.paths, source)
    labels = (frame["label"].fillna("").astype(str).str.strip() if "label" in frame.columns
              else pd.Series([""] * len(frame)))
    names = {str(name): index for index, name in enumerate(table.class_names)}
    verified = {}
    for line, (row, label) in enumerate(zip(rows, labels), start=2):
        if label and label not in names:
            raise ValueError(f"{manifest}, row {line}: label {label!r} is not one of the "
                             f"classes {sorted(names)}")
        verified[row] = names[label] if label else int(table.labels[row])
    if "inclusion_probability" in frame.columns:  # an audit sample (clipsei.engine.audit)
        for line, (row, value) in enumerate(zip(rows, frame["inclusion_probability"]), start=2):
            verified[row] = (verified[row], _probability(manifest, line, value))
    return verified


def _probability(manifest, line: int, value) -> float:
    try:
        probability = float(value)
    except ValueError:
        probability = float("nan")
    if not 0 < probability <= 1:
        raise ValueError(f"{manifest}, row {line}: inclusion_probability must be in (0, 1]; "
                         f"got {value!r}")
    return probability


def find_trusted_rows(manifest, table_paths, *, source=None) -> np.ndarray:
    """(N,) bool: the rows of ``table_paths`` (N image paths) named in the ``path`` column of
    the CSV ``manifest``. A relative path there is looked up under the manifest's folder,
    then ``source`` (the scanned folder, or a scanned manifest's folder), then the working
    directory. A one-line
    ``ValueError`` names the file and the first row that matches no image."""
    mask = np.zeros(len(table_paths), dtype=bool)
    mask[_resolve_rows(Path(manifest), _read(manifest), table_paths, source)] = True
    return mask


def _read(manifest) -> pd.DataFrame:
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"trusted manifest not found: {manifest}")
    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{manifest} is not a readable CSV: {err}") from err
    if "path" not in frame.columns:
        raise ValueError(f"{manifest} needs a 'path' column; it has {list(frame.columns)}")
    return frame


def _resolve_rows(manifest: Path, frame, table_paths, source) -> list:
    """The table row of each manifest row's path (see :func:`find_trusted_rows`)."""
    rows = {os.path.realpath(path): row for row, path in enumerate(table_paths)}
    if source is not None and Path(source).is_file():  # a scanned manifest: its folder
        source = Path(source).parent
    bases = [manifest.parent] + ([Path(source)] if source is not None else []) + [Path.cwd()]
    found_rows = []
    for line, path in enumerate(frame["path"].astype(str), start=2):
        candidates = [Path(path)] if Path(path).is_absolute() else [b / path for b in bases]
        found = [rows[os.path.realpath(c)] for c in candidates if os.path.realpath(c) in rows]
        if not found:
            raise ValueError(f"{manifest}, row {line}: {path} is not one of the scanned images")
        found_rows.append(found[0])
    return found_rows
