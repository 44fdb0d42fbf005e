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
import json
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rcmae.data.layout import SPLIT_FOLDERS, UNREAD_FOLDERS
from rcmae.errors import DiskFull, RcmaeError, bounded

log = logging.getLogger(__name__)

ZENODO = "https://zenodo.org"
CHUNK = 1 << 20
DCASE2020_TYPES = ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve")


class DownloadError(RcmaeError):
    """A download or unpacking step failed; the message names the archive and what to do."""


@dataclass(frozen=True)
class Part:
    record: str                 # Zenodo record id
    pattern: str                # archive name, with {type} for the machine type
    into: str                   # folder under --out that the archive's <type>/<split>/ folders go to
    types: tuple[str, ...]      # the machine types this part has an archive for
    renamed: tuple[tuple[str, str], ...] = ()  # (type, archive name) where a re-issued archive breaks the pattern

    def archive(self, machine_type: str) -> str:
        return dict(self.renamed).get(machine_type) or self.pattern.format(type=machine_type)


@dataclass(frozen=True)
class EvalLabels:
    """The published list mapping each eval test clip's name to its labelled name (the year's evaluator's
    `eval_data_list_<year>.csv`): lines of `name,labelled_name[,label]` under a line naming the machine type."""
    url: str
    into: str = "eval_data"


@dataclass(frozen=True)
class DataSet:
    title: str
    parts: dict[str, Part]
    md5: dict[str, str] = field(default_factory=dict)  # archive -> md5; empty: the Zenodo record's own listing
    labels: EvalLabels | None = None

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for part in self.parts.values() for t in part.types))

    def archives(self, sets: tuple[str, ...], types: tuple[str, ...]) -> list[tuple[str, Part]]:
        chosen = [self.parts[s] for s in sets if s in self.parts]
        unknown = [f"{what} {sorted(names)}" for what, names in (
            ("sets", set(sets) - set(self.parts)),
            ("machine types", set(types) - {t for part in chosen for t in part.types})) if names]
        if unknown:
            raise DownloadError(f"unknown {' and '.join(unknown)}: choose sets from {list(self.parts)} and types from "
                                f"{list(self.types)} ({self.type_summary()})")
        return [(part.archive(t), part) for part in chosen for t in types if t in part.types]

    def type_summary(self) -> str:
        return "; ".join(f"{name}: {', '.join(part.types)}" for name, part in self.parts.items())


def _year(title: str, records: tuple[str, str, str], dev_types: tuple[str, ...], eval_types: tuple[str, ...],
          dev_pattern: str, labels_commit: str, year: int, renamed: tuple[tuple[str, str], ...] = ()) -> DataSet:
    """A DCASE 2021-2025 Task 2 year: dev train+test of the dev types; additional train and eval test of the eval
    types (2021 and 2022 reuse the dev types, with new sections). md5 sums from each Zenodo record's listing."""
    return DataSet(
        title=title,
        parts={"dev": Part(records[0], dev_pattern, "dev_data", dev_types),
               "additional": Part(records[1], "eval_data_{type}_train.zip", "eval_data", eval_types, renamed),
               "eval": Part(records[2], "eval_data_{type}_test.zip", "eval_data", eval_types)},
        labels=EvalLabels(f"{EVAL_LISTS}/{labels_commit}/datasets/eval_data_list_{year}.csv"))


# The evaluators' repository (nttcslab/dcase2023_task2_baseline_ae) at the commit where each list last changed.
EVAL_LISTS = "https://raw.githubusercontent.com/nttcslab/dcase2023_task2_baseline_ae"
LISTS_2020_2023 = "b727c54e9faac6eb30ecbccb2139b9df66df4dd5"
DEV_TYPES = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")

DATASETS = {
    "dcase2020": DataSet(
        title="DCASE 2020 Task 2 (MIMII + ToyADMOS; IDs)",
        parts={"dev": Part("3678171", "dev_data_{type}.zip", "dev_data", DCASE2020_TYPES),
               "additional": Part("3727685", "eval_data_train_{type}.zip", "eval_data", DCASE2020_TYPES),
               "eval": Part("3841772", "eval_data_test_{type}.zip", "eval_data", DCASE2020_TYPES)},
        labels=EvalLabels(f"{EVAL_LISTS}/{LISTS_2020_2023}/datasets/eval_data_list_2020.csv"),
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
    "dcase2021": _year("DCASE 2021 Task 2 (sections, domain shift)", ("4562016", "4660992", "4884786"),
                       ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve"),
                       ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve"),
                       "dev_data_{type}.zip", LISTS_2020_2023, 2021),
    "dcase2022": _year("DCASE 2022 Task 2 (domain generalisation)", ("6355122", "6462969", "6586456"),
                       DEV_TYPES, DEV_TYPES, "dev_{type}.zip", LISTS_2020_2023, 2022),
    "dcase2023": _year("DCASE 2023 Task 2 (first-shot: one section per type)", ("7882613", "7830345", "7860847"),
                       DEV_TYPES, ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"),
                       "dev_{type}.zip", LISTS_2020_2023, 2023),
    "dcase2024": _year("DCASE 2024 Task 2 (first-shot; some attributes withheld)", ("10902294", "11259435", "11363076"),
                       DEV_TYPES, ("3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone",
                                   "HairDryer", "ToothBrush", "RoboticArm", "BrushlessMotor"),
                       "dev_{type}.zip", "9f98db61882f75d8fd0637f6a359f5f60d29fb08", 2024,
                       renamed=(("3DPrinter", "eval_data_3DPrinter_train_r2.zip"),
                                ("RoboticArm", "eval_data_RoboticArm_train_r2.zip"))),
    "dcase2025": _year("DCASE 2025 Task 2 (first-shot; supplemental clean/noise clips)",
                       ("15097779", "15392814", "15519362"), DEV_TYPES,
                       ("AutoTrash", "BandSealer", "CoffeeGrinder", "HomeCamera", "Polisher", "ScrewFeeder",
                        "ToyPet", "ToyRCCar"),
                       "dev_{type}.zip", "e3cc62ee947f267b1d1b20f77bf635b95dee70fa", 2025),
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
        splits = sorted(p for p in scratch.rglob("*") if p.is_dir() and p.name in (*SPLIT_FOLDERS, *UNREAD_FOLDERS))
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


def record_md5(base_url: str, record: str, name: str, downloads: Path) -> str:
    """The md5 Zenodo lists for `name` in `record` (`/api/records/ID`, kept in `.downloads/` for re-runs)."""
    listing = downloads / f"record-{record}.json"
    if not listing.exists():
        staging = downloads / f"record-{record}.json.part"
        staging.unlink(missing_ok=True)
        fetch(f"{base_url.rstrip('/')}/api/records/{record}", staging, progress=False)
        staging.rename(listing)
    try:
        files = json.loads(listing.read_text()).get("files", [])
        entries = files.get("entries", files) if isinstance(files, dict) else files
        sums = {e["key"]: e["checksum"] for e in (entries.values() if isinstance(entries, dict) else entries)}
    except (ValueError, AttributeError, KeyError, TypeError) as error:
        listing.unlink()
        raise DownloadError(f"record {record}: its file listing is not Zenodo's ({error!r}); re-run, or check "
                            f"--base-url") from None
    if name not in sums:
        raise DownloadError(f"record {record} lists no {name} (it has {', '.join(sorted(sums)) or 'no files'})")
    algorithm, _, digest = sums[name].partition(":")
    if algorithm != "md5":
        raise DownloadError(f"record {record}: {name}'s checksum is {algorithm}, not md5")
    return digest


def label_eval_clips(labels: EvalLabels, out: Path, types: tuple[str, ...], url: str | None = None) -> Path:
    """Fetch the published eval label list and rename each listed eval test clip to its labelled name (as the
    evaluators' own tools do), so `rcmae index` reads labels, domains and attributes from the names. A re-run
    renames what is left; the list stays beside the clips (`eval_data_list.csv`) to map names back."""
    target = out / labels.into / "eval_data_list.csv"
    if not target.exists():
        staging = target.with_name(target.name + ".part")
        fetch(url or labels.url, staging, progress=False)
        staging.rename(target)
    renamed = missing = 0
    machine_type = None
    for number, line in enumerate(target.read_text().splitlines(), 1):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 1 and cells[0]:
            machine_type = cells[0]
            continue
        if len(cells) < 2 or machine_type is None:
            raise DownloadError(f"{target}: line {number} is neither a machine type nor name,labelled_name")
        if machine_type not in types:
            continue
        folder = out / labels.into / machine_type
        sources = [split / cells[0] for split in (folder / s for s in SPLIT_FOLDERS if s != "train")]
        source = next((path for path in sources if path.exists()), None)
        if source is not None:
            source.rename(source.with_name(cells[1]))
            renamed += 1
        elif not any((path.with_name(cells[1])).exists() for path in sources):
            missing += 1
    log.info(f"download: {renamed} eval test clips given their labelled names from {target.name}"
             + (f"; {missing} listed clips not found (types not downloaded or removed)" if missing else ""))
    return target


def download(dataset: DataSet, out: str | Path, sets: tuple[str, ...], types: tuple[str, ...],
             base_url: str = ZENODO, progress: bool = True, keep_archives: bool = False,
             labels_url: str | None = None) -> list[Path]:
    """Fetch, verify and unpack the chosen parts of `dataset` under `out`, and with `eval` its published labels
    (from `labels_url` instead of the data set's own where given); returns the folders and files filled."""
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
            expected = dataset.md5.get(name) or record_md5(base_url, part.record, name, downloads)
            fetch(f"{base_url.rstrip('/')}/records/{part.record}/files/{name}?download=1", staging, progress)
            got = md5_of(staging)
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
    if "eval" in sets and dataset.labels is not None:
        filled.append(label_eval_clips(dataset.labels, out, types, labels_url))
    return sorted(set(filled))
