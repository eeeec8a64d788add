"""Output folders that clipsei creates, and the marker that tells them from a user's folders.

Every folder a command writes into (``--out``, ``--cache``, the demo's folder) holds a
marker file, :data:`OUTPUT_MARKER`. A command writes only into a folder that is missing,
empty, or marked; it never deletes or overwrites what it did not create. Scanning a folder
skips marked subfolders, so an output folder inside the scanned folder never becomes a class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OUTPUT_MARKER = ".clipsei-output"


def is_clipsei_output(path) -> bool:
    """True when ``path`` is a folder that holds :data:`OUTPUT_MARKER`."""
    return (Path(path) / OUTPUT_MARKER).is_file()


def mark_output_dir(path, *, kind: str) -> Path:
    """Create folder ``path`` (and parents) if needed and write the marker; return the path.

    kind: what the folder holds (``"scan"``, ``"embed"``, ``"cache"``, ``"demo"``...).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / OUTPUT_MARKER
    if not marker.exists():
        from . import __version__

        marker.write_text(json.dumps({"kind": kind, "clipsei": __version__}) + "\n")
    return path


def mark_output_for_cache(out, cache_dir, *, kind: str) -> None:
    """Mark ``out`` as clipsei's (:func:`mark_output_dir`) where ``cache_dir`` lies inside it,
    before the cache is written: a cache alone would leave ``out`` a non-empty folder that
    clipsei did not mark, which the outputs written after it would refuse."""
    if out is None or cache_dir is None:
        return
    if Path(out).resolve() in Path(cache_dir).resolve().parents:
        mark_output_dir(out, kind=kind)


def output_kind(path) -> str | None:
    """The ``kind`` recorded in ``path``'s marker, or None when the folder is not marked."""
    marker = Path(path) / OUTPUT_MARKER
    if not marker.is_file():
        return None
    try:
        return str(json.loads(marker.read_text()).get("kind"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def check_output_dir(path, *, option: str = "--out", require_ours: bool = True) -> Path:
    """Check, without creating anything, that folder ``path`` can take clipsei's output.

    Raises ``ValueError`` (one line naming ``option``) when ``path`` is a file, lies under a
    file, cannot be written, or (``require_ours``) is a non-empty folder without the marker.
    Returns ``path`` as a ``Path``.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is an existing file, not a folder; choose a folder")
    if path.is_dir() and require_ours and not is_clipsei_output(path) and any(path.iterdir()):
        raise ValueError(f"{option} {path} is a non-empty folder that clipsei did not create; "
                         "choose a new or empty folder (clipsei never overwrites your files)")
    _check_writable(_nearest_existing(path, option), path, option)
    return path


def check_output_file(path, *, option: str = "--out", header_end: str | None = None) -> Path:
    """Check, without creating anything, that file ``path`` can be written.

    An existing file is replaced only when its first line ends with ``header_end`` (a file
    clipsei wrote before; a file in a clipsei output folder may be the user's, such as a
    filled-in audit sheet); otherwise, and for a folder or an unwritable place, raises
    ``ValueError`` naming ``option``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file path")
    if path.exists() and not _header_ends(path, header_end):
        raise ValueError(f"{option} {path} already exists and was not written by clipsei; "
                         "choose another file (clipsei never overwrites your files)")
    _check_writable(_nearest_existing(path.parent, option), path, option)
    return path


def _header_ends(path: Path, header_end: str | None) -> bool:
    if header_end is None:
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline(4096).rstrip("\r\n").endswith(header_end)
    except OSError:
        return False


def _nearest_existing(path: Path, option: str) -> Path:
    """The deepest existing folder above or at ``path``; a file on the way is an error."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ValueError(f"{option} {path} lies under {candidate}, which is a file")
            return candidate
    return Path.cwd()


def _check_writable(folder: Path, path: Path, option: str) -> None:
    """Create and remove a temporary file in ``folder``: the one test that root cannot fool."""
    import tempfile

    try:
        handle, name = tempfile.mkstemp(prefix=".clipsei-write-test-", dir=folder)
    except OSError as err:
        raise ValueError(f"{option} {path} cannot be written: creating a file in {folder} "
                         f"failed ({err.strerror})") from err
    os.close(handle)
    os.unlink(name)
