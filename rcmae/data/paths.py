"""File names as text that every table, CSV and terminal accepts.

Real archives and copied drives hold names that are not UTF-8. Python keeps their bytes as lone surrogates,
which Arrow, JSON and most terminals refuse. `path_text` writes such bytes as `\\xNN` (valid UTF-8 names are
left as they are) and `path_of` finds the file again from that text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ESCAPED = re.compile(rb"\\x([0-9a-f]{2})")


def path_text(path: str | Path) -> str:
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def path_of(text: str | Path) -> Path:
    """The file `path_text` named: its `\\xNN` escapes undone, unless the text names an existing file as it is."""
    text = str(text)
    if "\\x" not in text or os.path.lexists(text):
        return Path(text)
    return Path(os.fsdecode(_ESCAPED.sub(lambda match: bytes([int(match[1], 16)]), text.encode("utf-8"))))
