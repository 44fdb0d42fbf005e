"""A run folder has one writer at a time and remembers the settings that made it.

`owned(folder)` holds `folder/.rcmae.lock` (the owner's host, pid, start time and lease) while a stage writes
there, renewing its heartbeat (the file's modification time, which a shared file system's server sets) every
quarter lease: a second writer fails at once naming the owner. A lock is stale, and taken over with a warning
naming its old holder, when its process no longer runs on this host, or, from any host, when its heartbeat is
older than its lease (a lost node, a head pod recreated under another name). `check_settings` compares what a
folder was made with against a re-run's settings and stops on any difference, naming them and the two ways out.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rcmae.errors import RcmaeError

LOCK = ".rcmae.lock"
LEASE_ENV = "RCMAE_LOCK_LEASE_S"  # seconds a lock stays valid without a heartbeat (default DEFAULT_LEASE_S)
DEFAULT_LEASE_S = 120.0
UNREADABLE_GRACE_S = 10.0  # an unreadable lock younger than this is being written, not stale
log = logging.getLogger(__name__)


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


def lease_seconds() -> float:
    text = os.environ.get(LEASE_ENV)
    try:
        lease = float(text) if text else DEFAULT_LEASE_S
    except ValueError:
        raise RcmaeError(f"{LEASE_ENV}={text!r}: a number of seconds") from None
    if lease <= 0:
        raise RcmaeError(f"{LEASE_ENV}={text!r}: must be positive")
    return lease


def stale_reason(owner: dict, heartbeat_age_s: float) -> str | None:
    """Why a lock no longer holds (its process is gone, its heartbeat is past its lease), or None."""
    if not owner:  # unreadable: being written this instant, or left half-written by a crash
        return "unreadable" if heartbeat_age_s > UNREADABLE_GRACE_S else None
    if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
        return "its process is gone"
    lease = float(owner.get("lease_s", DEFAULT_LEASE_S))
    if heartbeat_age_s > lease:
        return f"no heartbeat for {heartbeat_age_s:.0f} s, past its {lease:g} s lease"
    return None


def _read_lock(path: Path) -> tuple[dict, float] | None:
    """(the lock's record, {} when unreadable; its heartbeat's age in seconds), or None without a lock."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        owner = {}
    return (owner if isinstance(owner, dict) else {}), age


def lock_owner(folder: str | Path) -> dict | None:
    """Who holds the folder's lock, or None when it is free (a stale lock counts as free)."""
    found = _read_lock(Path(folder) / LOCK)
    if found is None or stale_reason(*found) is not None:
        return None
    return found[0]


class Heartbeat:
    """Renews a held lock's modification time every quarter lease until stopped; stops renewing (with a
    warning) if the lock file is no longer this holder's (taken over while this process was stalled)."""

    def __init__(self, path: Path, token: str, lease_s: float):
        self.path, self.token, self.interval = path, token, lease_s / 4
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rcmae-lock-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            found = _read_lock(self.path)
            if found is None or found[0].get("token") != self.token:
                log.warning(f"{self.path}: the lock is no longer this process's; another writer took it over")
                return
            os.utime(self.path)


@contextmanager
def owned(folder: str | Path, what: str) -> Iterator[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    lease = lease_seconds()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "what": what, "lease_s": lease, "token": uuid.uuid4().hex}
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            found = _read_lock(path)
            if found is None:  # released meanwhile
                continue
            reason = stale_reason(*found)
            if reason is None:
                owner = found[0]
                raise FolderBusy(f"{folder} is being written by {owner.get('what', 'another run')} (host "
                                 f"{owner.get('host')}, pid {owner.get('pid')}, since {owner.get('started')}): "
                                 f"wait for it, or use another --out") from None
            if found[0]:
                old = found[0]
                log.warning(f"{folder}: taking over the lock of {old.get('what', 'a run')} (host {old.get('host')}, "
                            f"pid {old.get('pid')}, since {old.get('started')}): {reason}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(me))
        break
    try:
        with Heartbeat(path, me["token"], lease):
            yield folder
    finally:
        found = _read_lock(path)
        if found is not None and found[0].get("token") == me["token"]:
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
