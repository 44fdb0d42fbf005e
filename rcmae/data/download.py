"""Download a DCASE data set from Zenodo into the layout `rcmae.data.layout` reads.

Each data set is one `DataSet` entry: its machine types, one Zenodo record per part (`dev`, `additional`,
`eval`) with the archive name pattern and the folder it unpacks into, and the md5 of every archive. A later
year is one more entry in `DATASETS`.

Per archive: the download goes to `OUT/.downloads/NAME.part` and resumes from its length (an HTTP range
request) after an interruption; the finished file's md5 must match the table, or it is removed and the error
names both sums. Unpacking goes to a scratch folder first and each `<type>/<split>` folder is then renamed
into place, so a kill leaves every split folder either complete or absent, and a re-run redoes what is
missing (`NAME.done` marks an archive unpacked).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rcmae.data.layout import SPLIT_FOLDERS
from rcmae.errors import DiskFull, RcmaeError, bounded

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
CHUNK = 1 << 20
DCASE2020_TYPES = ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve")


class DownloadError(RcmaeError):
    """A download or unpacking step failed; the message names the archive and what to do."""


@dataclass(frozen=True)
class Part:
    record: str   # Zenodo record id
    pattern: str  # archive name, with {type} for the machine type
    into: str     # folder under --out that the archive's <type>/<split>/ folders go to


@dataclass(frozen=True)
class DataSet:
    types: tuple[str, ...]
    parts: dict[str, Part]
    md5: dict[str, str]  # archive name -> md5

    def archives(self, sets: tuple[str, ...], types: tuple[str, ...]) -> list[tuple[str, Part]]:
        unknown = [f"{what} {sorted(names)}" for what, names in (("sets", set(sets) - set(self.parts)),
                                                                   ("machine types", set(types) - set(self.types)))
                   if names]
        if unknown:
            raise DownloadError(f"unknown {' and '.join(unknown)}: choose sets from {list(self.parts)} and types from "
                             f"{list(self.types)}")
        return [(self.parts[s].pattern.format(type=t), self.parts[s]) for s in sets for t in types]


DATASETS = {
    "dcase2020": DataSet(
        types=DCASE2020_TYPES,
        parts={"dev": Part("3678171", "dev_data_{type}.zip", "dev_data"),
               "additional": Part("3727685", "eval_data_train_{type}.zip", "eval_data"),
               "eval": Part("3841772", "eval_data_test_{type}.zip", "eval_data")},
        md5={
            "dev_data_fan.zip": "649bdfc06263ae7a838963f43b6641e6",
            "dev_data_pump.zip": "90e7091ef722b7238a7f1009365779cd",
            "dev_data_slider.zip": "da24a757719f0d94d5aa2d646bbfdc86",
            "dev_data_ToyCar.zip": "4dec75ca8d9f666aa9e4c1894a740501",
            "dev_data_ToyConveyor.zip": "03b6aa1bfd09a39d53af0ba39f71fa91",
            "dev_data_valve.zip": "34d2672f55bb041589ef79c10dc89934",
            "eval_data_train_fan.zip": "567798854130c8019df8b664c095ed1e",
            "eval_data_train_pump.zip": "4e33ae9c0db5cc88437675f5e317caee",
            "eval_data_train_slider.zip": "f84f186f4295fc23754abcdd1b0580a7",
            "eval_data_train_ToyCar.zip": "a5d4ccd498af70b04dd74b644b820006",
            "eval_data_train_ToyConveyor.zip": "0e808ac0b761e9fb13d5e0c65caff00d",
            "eval_data_train_valve.zip": "057cdd560caffb8305449541afd28c6d",
            "eval_data_test_fan.zip": "1eb9356a768cadfd0f2e59a5c57e578b",
            "eval_data_test_pump.zip": "23a8f8f924be218c69df67fe07360348",
            "eval_data_test_slider.zip": "0193c769073840332ce3aad84b1ccaa2",
            "eval_data_test_ToyCar.zip": "bea2bdd612f616be8f2b8eb087b32c7c",
            "eval_data_test_ToyConveyor.zip": "ccfcc9847c7d3404d7ee9d6d9e0b2ba2",
            "eval_data_test_valve.zip": "f69c551d2088691050d20cccca9d631c",
        }),
}


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, part: Path, progress: bool = True) -> None:
    """Download `url` to `part`, continuing from the bytes `part` already holds."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the range starts at the end: the file is whole already
            return
        raise DownloadError(f"{url}: the server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"cannot reach {url} ({getattr(error, 'reason', error)}): check the network or "
                            f"--base-url; a re-run resumes") from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        expected = response.headers.get("Content-Length")
        total = have + int(expected) if expected is not None else None
        received = 0
        with open(part, "ab" if have else "wb") as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                              desc=part.name[:-len(".part")], disable=not progress,
                                                              leave=False) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(f"{url}: transfer interrupted after {have + received} bytes ({error}): "
                                    f"re-run to resume") from None
    if expected is not None and received < int(expected):
        raise DownloadError(f"{url}: transfer interrupted after {have + received} of {total} bytes: re-run to "
                            f"resume")


MAX_RATIO = 20  # unpacked bytes per archive byte: audio barely compresses, a zip bomb compresses thousands-fold
SPACE_MARGIN = 1.05  # free space asked for beyond the unpacked size


def size_text(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def check_archive(archive: Path, zipped: zipfile.ZipFile) -> int:
    """Refuse unsafe member paths, a zip bomb and an unpack the disk has no room for; returns the unpacked size
    (zipfile reads no member past the size its header declares, so the sum bounds what is written)."""
    for member in zipped.namelist():
        if member.startswith("/") or ".." in Path(member).parts:
            raise DownloadError(f"{archive.name}: unsafe member path {bounded(member)}; nothing unpacked")
    unpacked = sum(info.file_size for info in zipped.infolist())
    if unpacked > MAX_RATIO * max(archive.stat().st_size, 1):
        raise DownloadError(f"{archive.name}: refused: it would unpack to {unpacked:,} bytes, over {MAX_RATIO} "
                            f"times its own size (a zip bomb, or not a DCASE archive); nothing unpacked")
    free = shutil.disk_usage(archive.parent).free
    if unpacked * SPACE_MARGIN > free:
        raise DiskFull(f"{archive.parent}: {size_text(unpacked * SPACE_MARGIN)} needed to unpack {archive.name}, "
                       f"{size_text(free)} free: free some space and re-run (it resumes)")
    return unpacked


def unpack(archive: Path, into: Path) -> list[str]:
    """Move the archive's `<type>/<split>/` folders into `into`, each whole or not at all; the scratch folder is
    removed whatever happens."""
    scratch = archive.with_name(archive.name + ".unpacking")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                check_archive(archive, zipped)
                zipped.extractall(scratch)
        except zipfile.BadZipFile as error:
            raise DownloadError(f"{archive.name}: not a readable zip ({error}); remove it and re-run") from None
        splits = sorted(p for p in scratch.rglob("*") if p.is_dir() and p.name in SPLIT_FOLDERS)
        if not splits:
            raise DownloadError(f"{archive.name}: no <type>/<split> folder inside ({', '.join(SPLIT_FOLDERS)})")
        unread = sorted({str(p.parent.relative_to(scratch)) for p in scratch.rglob("*.wav")}
                        - {str(split.relative_to(scratch)) for split in splits})
        if unread:  # never "done" with clips left behind
            raise DownloadError(f"{archive.name}: holds audio in {', '.join(unread)}, which is no split folder "
                                f"rcmae reads ({', '.join(SPLIT_FOLDERS)}): nothing was unpacked")
        moved = []
        for split in splits:
            target = into / split.parent.name / split.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # a folder from an earlier, unfinished unpack
            split.rename(target)
            moved.append(f"{split.parent.name}/{split.name}")
        return moved
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def download(dataset: DataSet, out: str | Path, sets: tuple[str, ...], types: tuple[str, ...],
             base_url: str = ZENODO, progress: bool = True, keep_archives: bool = False) -> list[Path]:
    """Fetch, verify and unpack the chosen parts of `dataset` under `out`; returns the folders filled."""
    out = Path(out)
    downloads = out / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    filled = []
    for name, part in dataset.archives(sets, types):
        archive, done = downloads / name, downloads / f"{name}.done"
        filled.append(out / part.into)
        if done.exists():
            log.info(f"download: {name} already unpacked")
            continue
        if not archive.exists():
            staging = downloads / f"{name}.part"
            fetch(f"{base_url.rstrip('/')}/records/{part.record}/files/{name}?download=1", staging, progress)
            got, expected = md5_of(staging), dataset.md5[name]
            if got != expected:
                staging.unlink()
                raise DownloadError(f"{name}: checksum mismatch (md5 {got}, expected {expected}); the file was "
                                    f"removed: re-run to download it again")
            staging.rename(archive)
        moved = unpack(archive, out / part.into)
        done.write_text("\n".join(moved) + "\n")
        if not keep_archives:
            archive.unlink()
        log.info(f"download: {name} -> {out / part.into} ({', '.join(moved)})")
    return sorted(set(filled))
