"""The command line's stderr: log records and Python warnings as one line each, once."""

from __future__ import annotations

import logging
import sys
import warnings


class Once(logging.Filter):
    """Let each distinct message through once: a warning that is also logged shows once."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def first_time(self, message: str) -> bool:
        new = message not in self.seen
        self.seen.add(message)
        return new

    def filter(self, record: logging.LogRecord) -> bool:
        return self.first_time(record.getMessage())


class one_line_logging:
    """Log records and Python warnings reach stderr as one line each, each message once
    (warnings keep their category for code that records them); restored on exit."""

    def __init__(self, level: int):
        self.level, self.once = level, Once()
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(self.once)

    def __enter__(self):
        root = logging.getLogger()
        self.saved = (root.level, root.handlers[:], warnings.formatwarning)
        root.handlers = [self.handler]
        root.setLevel(self.level)
        warnings.formatwarning = self._format
        self.filters = warnings.catch_warnings()
        self.filters.__enter__()
        if self.level > logging.WARNING:
            warnings.simplefilter("ignore")
        return self

    def _format(self, message, category, filename, lineno, line=None) -> str:
        text = str(message)
        return f"WARNING: {text}\n" if self.once.first_time(text) else ""

    def __exit__(self, *exc):
        self.filters.__exit__(*exc)
        root = logging.getLogger()
        root.setLevel(self.saved[0])
        root.handlers = self.saved[1]
        warnings.formatwarning = self.saved[2]
        return False
