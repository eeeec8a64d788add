"""Output folders that clipsei creates, and the marker that tells them from a user's folders.

Every folder a command writes into (``--out``, ``--cache``, the demo's folder) holds a
marker file, :data:`OUTPUT_MARKER`. A command writes only into a folder that is missing,
empty, or marked; it never deletes or overwrites what it did not create. Scanning a folder
skips marked subfolders, so an output folder inside the scanned folder never becomes a class.
"""

from __future__ import annotations

import json
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
