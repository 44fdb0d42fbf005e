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
from rcmae.stores import Mirror, StoreError, activate, check_uri, deactivate, flat, is_uri, mirror_of, scheme_of

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


class LockFile:
    """The lock as a file in the folder: created only if absent (`O_EXCL`), its heartbeat the file's mtime."""

    def __init__(self, folder: Path):
        self.folder, self.path = folder, folder / LOCK

    def create(self, text: str) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        return True

    def read(self) -> tuple[dict, float] | None:
        """(the lock's record, {} when unreadable; its heartbeat's age in seconds), or None without a lock."""
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        return _record(text), age

    def renew(self, text: str) -> None:
        os.utime(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class StoreLock:
    """The lock as an object in an S3 folder: created only if absent (a conditional put, `If-None-Match: *`, which
    S3 and most S3-compatible stores honour), its heartbeat the object's last-modified time (rewritten)."""

    def __init__(self, uri: str):
        bucket, _, prefix = check_uri(uri).split("://", 1)[1].partition("/")
        self.bucket, self.key = bucket, f"{prefix}/{LOCK}".lstrip("/")
        try:
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise StoreError(f"{uri}: an s3:// run folder needs boto3 for its one-writer lock (pip install "
                             f"boto3)") from None
        self.client, self.errors, self.ClientError = boto3.client("s3"), (BotoCoreError, ClientError), ClientError

    def _call(self, name: str, **kwargs):
        try:
            return getattr(self.client, name)(Bucket=self.bucket, Key=self.key, **kwargs)
        except self.errors as error:
            if isinstance(error, self.ClientError) and error.response.get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"):
                raise
            raise StoreError(f"s3://{self.bucket}/{self.key}: {flat(error)}") from None

    def create(self, text: str) -> bool:
        try:
            self._call("put_object", Body=text.encode(), IfNoneMatch="*")
        except self.ClientError:
            return False
        return True

    def read(self) -> tuple[dict, float] | None:
        try:
            answer = self._call("get_object")
        except self.ClientError:
            return None
        return _record(answer["Body"].read().decode(errors="replace")), time.time() - answer["LastModified"].timestamp()

    def renew(self, text: str) -> None:
        self._call("put_object", Body=text.encode())

    def remove(self) -> None:
        try:
            self._call("delete_object")
        except self.ClientError:
            pass


def _record(text: str) -> dict:
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        owner = {}
    return owner if isinstance(owner, dict) else {}


def lock_for(folder: str | Path) -> LockFile | StoreLock:
    """The lock of a local folder (or a `file://` one), or of an `s3://` folder; other stores are refused."""
    scheme = scheme_of(folder)
    if scheme is None:
        return LockFile(Path(folder))
    if scheme == "file":
        return LockFile(Path(check_uri(str(folder))[len("file://"):]))
    if scheme == "s3":
        return StoreLock(str(folder))
    raise StoreError(f"{folder}: rcmae writes run folders to s3:// (whose conditional create keeps one writer per "
                     f"folder) or to local or mounted folders; it refuses {scheme}:// rather than share a folder "
                     f"between writers")


def lock_owner(folder: str | Path) -> dict | None:
    """Who holds the folder's lock, or None when it is free (a stale lock counts as free, and a store rcmae does
    not write run folders to holds none)."""
    try:
        lock = lock_for(folder)
    except StoreError:
        return None
    found = lock.read()
    if found is None or stale_reason(*found) is not None:
        return None
    return found[0]


class Heartbeat:
    """Renews a held lock's heartbeat every quarter lease until stopped; stops renewing (with a warning) if the
    lock is no longer this holder's (taken over while this process was stalled)."""

    def __init__(self, lock: LockFile | StoreLock, label: str, me: dict, lease_s: float):
        self.lock, self.label, self.me, self.interval = lock, label, me, lease_s / 4
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
            try:
                found = self.lock.read()
                if found is None or found[0].get("token") != self.me["token"]:
                    log.warning(f"{self.label}: the lock is no longer this process's; another writer took it over")
                    return
                self.lock.renew(json.dumps(self.me))
            except (OSError, RcmaeError) as error:  # a store or file server briefly away: the next beat retries
                log.warning(f"{self.label}: could not renew the lock ({error}); retrying")


@contextmanager
def owned(folder: str | Path, what: str) -> Iterator[str | Path]:
    """Hold `folder`'s lock (a local folder, or an `s3://` one) while the block runs."""
    lock, label = lock_for(folder), str(folder)
    lease = lease_seconds()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "what": what, "lease_s": lease, "token": uuid.uuid4().hex}
    for _ in range(2):
        if lock.create(json.dumps(me)):
            break
        found = lock.read()
        if found is None:  # released meanwhile
            continue
        reason = stale_reason(*found)
        if reason is None:
            owner = found[0]
            raise FolderBusy(f"{label} is being written by {owner.get('what', 'another run')} (host "
                             f"{owner.get('host')}, pid {owner.get('pid')}, since {owner.get('started')}): "
                             f"wait for it, or use another --out")
        if found[0]:
            old = found[0]
            log.warning(f"{label}: taking over the lock of {old.get('what', 'a run')} (host {old.get('host')}, "
                        f"pid {old.get('pid')}, since {old.get('started')}): {reason}")
        lock.remove()
    else:
        raise FolderBusy(f"{label}: another writer took the lock at the same moment; try again")
    try:
        with Heartbeat(lock, label, me, lease):
            yield folder
    finally:
        found = lock.read()
        if found is not None and found[0].get("token") == me["token"]:
            lock.remove()


@contextmanager
def staged(uri: str, what: str) -> Iterator[Path]:
    """Work on a store folder in its local working copy (`stores.Mirror`) while holding the store folder's lock:
    the copy is made equal to the store first, and the store to the copy at every `sync` and when the block
    ends, also after a failure (what finished is kept for a resume)."""
    mirror = Mirror.of(uri)
    with owned(mirror.uri, what):
        fetched = mirror.pull()
        log.info(f"{mirror.uri}: working in {mirror.local} ({fetched} files fetched from the store)")
        activate(mirror)
        try:
            yield mirror.local
        except BaseException:
            deactivate(mirror)
            try:
                log.info(f"{mirror.uri}: {mirror.push()} files sent to the store (what finished, for a resume)")
            except RcmaeError as error:  # the run's own error is the one to report
                log.error(f"{mirror.uri}: could not send the working copy {mirror.local} to the store: {error}")
            raise
        deactivate(mirror)
        log.info(f"{mirror.uri}: {mirror.push()} files sent to the store")


@contextmanager
def writing(out: str | Path, what: str) -> Iterator[Path]:
    """A command's output folder: a local one as it is, a store URI as its working copy (`staged`)."""
    if not is_uri(out):
        yield Path(out)
        return
    with staged(str(out), what) as local:
        yield local


def sync(path: str | Path) -> None:
    """Send a working copy's changes to its store now (nothing for a local folder or a fetched copy)."""
    mirror = mirror_of(path)
    if mirror is not None and not mirror.read_only:
        mirror.push()


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
