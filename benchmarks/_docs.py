"""Write one benchmark's section of ``docs/benchmarks.md`` without touching the others.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery figure below was measured by a script in `benchmarks/`; each section\n"
    "gives the exact command, the machine and the date. Compare ratios within one section: they\n"
    "come from one run on one machine. Timings on these shared machines are noisy.\n"
)


def machine_line(device: str = "cpu") -> str:
    """One line describing where and when this ran; names the GPU when ``device`` is CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    today = datetime.date.today().isoformat()
    python = platform.python_version()
    gpu = ""
    if str(device).startswith("cuda"):
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"Machine: {os.cpu_count()} cores, {cpu}{gpu}, Python {python}; date {today}."


def write_section(name: str, markdown: str, *, path: Path = DOCS) -> None:
    """Replace (or append) the section ``name`` of ``path`` with ``markdown``."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {name}:start -->\n{markdown.rstrip()}\n<!-- {name}:end -->"
    marker = re.escape(name)
    pattern = re.compile(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
