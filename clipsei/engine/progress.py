"""Progress of the engine's long stages, reported through a callback (the engine never prints).

A callback is any ``callable(stage: str, done: int, total: int)``; the stages are
``"neighbours"`` (rows searched) and ``"heads"`` (training epochs, all heads of a batch
counting as one). :func:`clipsei._progress.progress_bars` turns the calls into bars.
"""

from __future__ import annotations


class StageProgress:
    """Counts one stage's units of work and reports ``(stage, done, total)`` after each step.

    ``callback`` None reports nothing; ``done`` never passes ``total``.
    """

    def __init__(self, callback, stage: str, total: int):
        self.callback = callback
        self.stage = stage
        self.total = max(int(total), 0)
        self.done = 0

    def advance(self, n_done: int = 1) -> None:
        """Count ``n_done`` more units and report them."""
        self.done = min(self.done + int(n_done), self.total)
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)
