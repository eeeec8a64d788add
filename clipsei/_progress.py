"""Progress bars (rate and ETA) for the engine's stage callbacks; shown on a terminal only."""

from __future__ import annotations

import sys

from tqdm import tqdm

_UNITS = {"neighbours": "row", "heads": "epoch"}


class _StageBars:
    """A progress callback ``(stage, done, total)`` drawing one tqdm bar per stage on stderr."""

    def __init__(self):
        self._bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, unit=_UNITS.get(stage, "it"),
                                           dynamic_ncols=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[stage]  # a stage run again (a wider search) gets a new bar


def progress_bars(enabled: bool = True):
    """A stage-progress callback drawing bars, or None when ``enabled`` is False or stderr
    is not a terminal (a notebook, a pipe, a log file)."""
    if not enabled or not sys.stderr.isatty():
        return None
    return _StageBars()
