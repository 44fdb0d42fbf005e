"""Folders on object stores: `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///path`, through `pyarrow.fs`.

rcmae works on a store folder through a local working copy (`Mirror`), in `RCMAE_STORE_CACHE` (default
~/.cache/rcmae/stores): `pull` makes the copy equal the store's folder, `push` makes the store's folder equal the
copy. The store is the copy that lasts and that other nodes and later runs see; the working copy is the driver's
scratch space and may be deleted at any time. Paths Ray writes straight to the store (Ray Train's `ray_results`)
are left to it: neither pushed nor pulled nor deleted. `shared(path)` names a working-copy path by its store URI
(for Ray Train's storage and for workers on other nodes), `fetched(uri)` gives a read-only local copy of a
store folder (a model to load). Credentials and endpoints come from the store's usual environment
(`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `GOOGLE_APPLICATION_CREDENTIALS`, ...), as pyarrow and Ray read them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rcmae.errors import RcmaeError

SCHEMES = ("s3", "gs", "file")
CACHE_ENV = "RCMAE_STORE_CACHE"
# folders others write to the store themselves: Ray Train and Tune (`ray_results`), a sweep's trials (`trials`:
# each trial's process keeps its own folder there, as a working copy of its own)
STORE_ONLY = ("ray_results", "trials")
TRANSIENT = (".rcmae.lock",)  # never synced: each side has its own
URI_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
log = logging.getLogger(__name__)


class StoreError(RcmaeError):
    """An object-store URI that cannot be used (unknown scheme, no such bucket, no credentials)."""


def flat(error: BaseException) -> str:
    """A store client's error message on one line, bounded (some hold whole XML answers)."""
    return " ".join(str(error).split())[:300]


def scheme_of(text: str | Path) -> str | None:
    """The URI scheme of `text` ('s3', 'gs', 'file', or another one), None for a plain path."""
    found = URI_PATTERN.match(str(text))
    return found.group(1).lower() if found else None


def is_uri(text: str | Path) -> bool:
    return scheme_of(text) is not None


def check_uri(uri: str) -> str:
    """`uri` without a trailing slash, or a StoreError naming what rcmae reads and writes."""
    scheme = scheme_of(uri)
    if scheme not in SCHEMES:
        raise StoreError(f"{uri}: rcmae reads and writes {', '.join(s + '://' for s in SCHEMES)} URIs or local paths")
    return uri.rstrip("/")


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a store URI."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(check_uri(uri))
    except (OSError, ValueError) as error:
        raise StoreError(f"{uri}: cannot open the store ({flat(error)})") from None


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rcmae" / "stores").expanduser()


def _cache_folder(kind: str, uri: str) -> Path:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[1])[-80:]
    return cache_root() / kind / f"{readable}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def _synced(relative: str, partial: bool = False) -> bool:
    """Whether a relative path is kept equal on both sides; `partial`: also the folders being written aside
    (`*.partial`, sent early by `published` and deleted from the store by the next push)."""
    parts = relative.split("/")
    return not (set(parts) & set(STORE_ONLY) or parts[-1] in TRANSIENT
                or (not partial and any(p.endswith(".partial") for p in parts)))


def _current(have: tuple[int, float] | None, wanted: tuple[int, float]) -> bool:
    """A copy (size, mtime) already holds the version (size, mtime) `wanted` describes: the same size, and set
    to that version's time when it was copied (or changed later)."""
    return have is not None and have[0] == wanted[0] and have[1] >= wanted[1]


def store_files(uri: str, partial: bool = False) -> dict[str, tuple[int, float]]:
    """relative path -> (size, modification time) of every synced object under a store folder (`partial`: with
    the folders being written aside)."""
    import pyarrow.fs

    fs, root = filesystem(uri)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as error:
        raise StoreError(f"{uri}: cannot list the store folder ({flat(error)})") from None
    return {rel: (info.size, info.mtime.timestamp()) for info in infos
            if info.type == pyarrow.fs.FileType.File and _synced(rel := info.path[len(root):].lstrip("/"), partial)}


@dataclass(frozen=True)
class Mirror:
    """A store folder (`uri`) and its local working copy (`local`; `read_only`: a fetched copy, never sent)."""

    uri: str
    local: Path
    read_only: bool = False

    @classmethod
    def of(cls, uri: str) -> "Mirror":
        uri = check_uri(uri)
        return cls(uri, _cache_folder("work", uri).resolve())

    def _local_files(self, under: Path | None = None) -> dict[str, tuple[int, float]]:
        found = {}
        top = under or self.local
        for path in top.rglob("*") if top.exists() else []:
            relative = path.relative_to(self.local).as_posix()
            if path.is_file() and not path.is_symlink() and _synced(relative, partial=under is not None):
                stat = path.stat()
                found[relative] = (stat.st_size, stat.st_mtime)
        return found

    def pull(self) -> int:
        """Make the working copy equal the store folder; the number of files fetched."""
        import pyarrow.fs

        fs, root = filesystem(self.uri)
        remote, local = store_files(self.uri), self._local_files()
        for relative in set(local) - set(remote):
            (self.local / relative).unlink()
        fetched = 0
        for relative, (size, mtime) in sorted(remote.items()):
            if _current(local.get(relative), (size, mtime)):
                continue
            target = self.local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(f"{root}/{relative}", str(target), source_filesystem=fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            os.utime(target, (mtime, mtime))
            fetched += 1
        self.local.mkdir(parents=True, exist_ok=True)
        return fetched

    def push(self, under: Path | None = None) -> int:
        """Make the store folder equal the working copy (`under`: send that folder of it only, also when it is
        being written aside); the number of files sent."""
        import pyarrow.fs

        fs, root = filesystem(self.uri)
        remote, local = store_files(self.uri, partial=True), self._local_files(under)
        sent = 0
        for relative, state in sorted(local.items()):
            if _current(remote.get(relative), state):
                continue
            source = self.local / relative
            try:
                pyarrow.fs.copy_files(str(source), f"{root}/{relative}", source_filesystem=pyarrow.fs.LocalFileSystem(),
                                      destination_filesystem=fs)
            except FileNotFoundError:  # removed by the run meanwhile: the next push deletes its object
                continue
            stored = fs.get_file_info(f"{root}/{relative}").mtime.timestamp()
            os.utime(source, (stored, stored))  # equal now: not sent again, not fetched back
            sent += 1
        for relative in set(remote) - set(local) if under is None else ():
            fs.delete_file(f"{root}/{relative}")
        return sent

    def remove_store_only(self, relative: str) -> None:
        """Delete a folder Ray writes to the store itself (a stage's `ray_results`, on --force)."""
        fs, root = filesystem(self.uri)
        fs.delete_dir_contents(f"{root}/{relative}", missing_dir_ok=True)

    def uri_of(self, path: Path) -> str:
        relative = Path(path).resolve().relative_to(self.local.resolve()).as_posix()
        return self.uri if relative == "." else f"{self.uri}/{relative}"


_ACTIVE: list[Mirror] = []  # the working copies (and fetched inputs) this process's commands run in


def activate(mirror: Mirror) -> None:
    _ACTIVE.append(mirror)


def deactivate(mirror: Mirror) -> None:
    _ACTIVE.remove(mirror)


def mirror_of(path: str | Path) -> Mirror | None:
    """The active working copy `path` lies in, or None."""
    if is_uri(path):
        return None
    resolved = Path(path).resolve()
    return next((m for m in _ACTIVE if resolved.is_relative_to(m.local.resolve())), None)


def shared(path: str | Path) -> str:
    """`path` as every node reaches it: its store URI inside a working copy, else the path itself (a local or
    mounted folder, or already a URI)."""
    mirror = mirror_of(path)
    return mirror.uri_of(Path(path)) if mirror is not None else str(path)


def published(path: str | Path) -> str:
    """`path` as every node reaches it, now: a working-copy folder is sent to the store first (a model that
    actors on other nodes load while the stage that makes it still runs)."""
    mirror = mirror_of(path)
    if mirror is None:
        return str(path)
    if not mirror.read_only:
        mirror.push(under=Path(path).resolve())
    return mirror.uri_of(Path(path))


def parent_of(location: str | Path) -> str | Path:
    """The folder holding `location` (a path or a store URI)."""
    return check_uri(str(location)).rsplit("/", 1)[0] if is_uri(location) else Path(location).parent


@contextmanager
def reading(location: str | Path | None) -> Iterator[Path | None]:
    """A command's input folder: a local one as it is (None: none given); a store folder as its fetched copy,
    named by its URI (`shared`) and read by Ray Data on this node (`on_driver`) while the block runs."""
    if location is None or not is_uri(location):
        yield None if location is None else Path(location)
        return
    mirror = Mirror(check_uri(str(location)), fetched(location), read_only=True)
    activate(mirror)
    try:
        yield mirror.local
    finally:
        deactivate(mirror)


class Relocated:
    """The files under a working-copy folder (`local`), read from its store folder (`uri`): how a process on
    another node than the driver reads them."""

    def __init__(self, local: str, uri: str):
        self.local, self.uri, self._fs = local, uri, None

    def __getstate__(self) -> dict:  # sent to actors without the open filesystem
        return {"local": self.local, "uri": self.uri, "_fs": None}

    def read(self, path: str) -> str | bytes:
        """A file's bytes from the store, or (outside the folder) its path as it is."""
        if not path.startswith(self.local + "/"):
            return path
        if self._fs is None:
            self._fs = filesystem(self.uri)
        fs, root = self._fs
        with fs.open_input_stream(f"{root}{path[len(self.local):]}") as stream:
            return stream.read()


def relocated(folder: str | Path) -> Relocated | None:
    """For a folder inside a working copy (sent to the store), how other nodes read its files; else None."""
    return Relocated(str(Path(folder).resolve()), shared(folder)) if mirror_of(folder) is not None else None


def on_driver(path: str | Path) -> str:
    """`path` for Ray Data reads and writes: inside a working copy (which only this node has) as `local://`, so
    Ray Data runs those tasks on this node; else the path itself. (Ray 2.60 warns that `local://` goes after
    January 2027: then these reads and writes take the store URIs themselves.)"""
    return f"local://{Path(path).resolve()}" if mirror_of(path) is not None else str(path)


def fetched(location: str | Path) -> Path:
    """A local folder holding what `location` names: a local path as it is; a store folder copied into the cache,
    one folder per version of its contents (written aside and renamed, so processes fetching at once, such as a
    stage's workers, never read a half-copied folder)."""
    if not is_uri(location):
        return Path(location)
    uri = check_uri(str(location))
    listing = store_files(uri)
    if not listing:
        raise StoreError(f"{uri}: nothing there")
    version = hashlib.sha256(repr(sorted(listing.items())).encode()).hexdigest()[:16]
    final = _cache_folder("fetched", uri) / version
    if not final.is_dir():
        staging = final.with_name(f".{version}.{os.getpid()}.partial")
        Mirror(uri, staging).pull()
        try:
            staging.rename(final)
        except OSError:  # another process finished the same version first
            shutil.rmtree(staging, ignore_errors=True)
    return final


def clear(path: Path) -> None:
    """Remove a run-folder entry: locally, and for a store-only folder of a working copy, in the store."""
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    mirror = mirror_of(path)
    if mirror is not None and path.name in STORE_ONLY:
        mirror.remove_store_only(Path(path).resolve().relative_to(mirror.local.resolve()).as_posix())
