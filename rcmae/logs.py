"""rcmae's progress and warnings go through Python `logging` (the `rcmae` logger tree); `rcmae --log-level`
sets what is shown. Command results (tables, paths written) stay on stdout; log lines go to stderr."""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (pytest, notebooks and Ray swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(level: str | int = "info") -> None:
    """Show `rcmae` log lines at `level` and above on stderr, as bare messages (they carry their stage)."""
    logger = logging.getLogger("rcmae")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _CurrentStderr)]
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)


def current_level() -> int:
    return logging.getLogger("rcmae").getEffectiveLevel()
