"""What a user can fix, as one exception type.

Everything rcmae raises for a cause outside its own code (a config value, the data, a folder, a download, a
checkpoint, missing weights, a full disk) is an `RcmaeError`: the command line prints it as one line and exits
with `EXIT.user_error`. Any other exception is a bug in rcmae (or a library under it): its traceback is printed,
with a line saying so, and the exit code is `EXIT.internal_error`.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


class RcmaeError(Exception):
    """A problem the user can fix; its message names the file or value and the reason."""


class ConfigError(RcmaeError):
    """A configuration value is out of range or inconsistent."""


class DataError(RcmaeError):
    """The data cannot be used as they are: no clips, too few, non-finite values."""


class DiskFull(RcmaeError):
    """No space left where rcmae writes."""


@dataclass(frozen=True)
class ExitCodes:
    ok: int = 0
    anomaly_found: int = 1  # `rcmae score` only
    user_error: int = 2     # also argparse's usage errors
    not_all_scored: int = 3  # `rcmae score`: some inputs not scored (listed with their reasons)
    internal_error: int = 4
    interrupted: int = 130  # Ctrl-C or SIGTERM (`rcmae.interrupts`)


EXIT = ExitCodes()

# errors of a path the user named or a disk they own: fixable by them, reported as "path: reason"
USER_OS_ERRORS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC, errno.EROFS,
                  errno.EDQUOT, errno.ENAMETOOLONG, errno.ENOTEMPTY, errno.EEXIST}


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it: explicit causes, implicit contexts, the cause a Ray task error wraps and
    the worker or controller failures of a Ray Train error (a user error raised in a Ray worker reaches the
    driver wrapped once or twice)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        failures = getattr(current, "worker_failures", None) or {}
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__,
                    getattr(current, "controller_failure", None), *failures.values()]


def user_error(error: BaseException) -> RcmaeError | OSError | None:
    """The user-fixable error behind `error`, if any."""
    for cause in causes(error):
        if isinstance(cause, RcmaeError):
            return cause
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in USER_OS_ERRORS:
            return cause
    return None


def one_line(error: BaseException) -> str:
    """A user error as one line: an OSError as "path: reason" (with the space hint for a full disk)."""
    if isinstance(error, OSError) and not isinstance(error, RcmaeError) and error.errno is not None:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        path = error.filename2 if full and error.filename2 else error.filename  # a copy names its source first
        where = f"{path}: " if path else ""
        text = f"{where}{error.strerror or ' '.join(str(error).split())}"
        if full:
            text += " (free some space there, or point --out at a disk with room)"
        return text
    return " ".join(str(error).split()) or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether a full disk (or quota) is behind `error`, also through Ray's wrappers and Arrow's messages."""
    return any(isinstance(cause, OSError) and (cause.errno in (errno.ENOSPC, errno.EDQUOT)
                                               or "[errno 28]" in str(cause).lower()) for cause in causes(error))


@contextmanager
def disk_full_named(folder: object, doing: str) -> Iterator[None]:
    """A full disk while the block writes under `folder` becomes one `DiskFull` naming the folder (the error a
    library raises from deep inside, e.g. Ray Data's Parquet writers, names neither)."""
    try:
        yield
    except Exception as error:
        if is_disk_full(error):
            raise DiskFull(f"{folder}: no space left on device while {doing}: free some space there, or point "
                           f"--out at a disk with room") from error
        raise


def bounded(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for error messages about values a user gave."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text)} chars)"
