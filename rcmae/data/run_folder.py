"""A run folder has one writer at a time and remembers the settings that made it.

`owned(folder)` holds `folder/.rcmae.lock` (the owner's host, pid and start time) while a stage writes there:
a second writer fails at once naming the owner; a lock left by a process that no longer runs on this host
is stale and taken over. `check_settings` compares what a folder was made with against a re-run's settings
and stops on any difference, naming them and the two ways out.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rcmae.errors import RcmaeError

LOCK = ".rcmae.lock"


class FolderBusy(RcmaeError):
    """Another process writes to this run folder."""


class SettingsChanged(RcmaeError):
    """A folder made with other settings than this run's."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(folder: str | Path) -> dict | None:
    """Who holds the folder's lock, or None when it is free (a stale lock on this host counts as free)."""
    path = Path(folder) / LOCK
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
        return None
    return owner


@contextmanager
def owned(folder: str | Path, what: str) -> Iterator[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "what": what}
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = lock_owner(folder)
            if owner is not None:
                raise FolderBusy(f"{folder} is being written by {owner.get('what', 'another run')} (host "
                                 f"{owner.get('host')}, pid {owner.get('pid')}, since {owner.get('started')}): "
                                 f"wait for it, or use another --out") from None
            path.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(me))
        break
    try:
        yield folder
    finally:
        path.unlink(missing_ok=True)


def check_settings(recorded: dict, wanted: dict, folder: str | Path) -> None:
    """Stop when `folder` was made with settings other than `wanted`."""
    changed = {key: (recorded.get(key), value) for key, value in wanted.items() if recorded.get(key) != value}
    if changed:
        lines = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in sorted(changed.items()))
        raise SettingsChanged(f"{folder} was made with other settings ({lines}): use a new --out, or --force to "
                              f"redo it with this run's settings")


@contextmanager
def written_aside(target: str | Path, replace_whole: bool = True) -> Iterator[Path]:
    """A scratch folder beside `target` to write a set of outputs into; when the block ends without an error
    the set takes `target`'s place, else the scratch folder is removed: a failure (a full disk, a crash, a kill
    before the rename) leaves the previous complete set or nothing, never a part. `replace_whole=False` keeps
    what else `target` holds (a user's --out folder) and replaces only the entries written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed writer
    staging.mkdir()
    try:
        yield staging
        if replace_whole or not target.exists():
            _remove(target)
            staging.rename(target)
        else:
            for entry in sorted(staging.iterdir()):
                _remove(target / entry.name)
                entry.rename(target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
