"""Index a DCASE-layout data root into a clip table (one row per clip).

Recognised file names (the directory above the split folder names the machine type):
- DCASE 2020 dev/eval train+test:  {normal,anomaly}_id_XX_NNNNNNNN.wav
- DCASE 2020 eval test (no label): id_XX_NNNNNNNN.wav
- DCASE 2021-2025: section_XX_{source,target}_{train,test}_{normal,anomaly}_NNNN[_attributes].wav
  (and unlabelled eval test files: section_XX_NNNN.wav / section_XX_{source,target}_test_NNNN.wav)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from rcmae.data.names import (
    DCASE2020,
    DCASE2020_UNLABELLED,
    DCASE2021,
    DCASE2021_UNLABELLED,
    EXPECTED_PATTERNS,
)
from rcmae.data.paths import path_text
from rcmae.errors import RcmaeError

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SPLITS = ("train", "test")
# the folders clips sit in, and their split: DCASE 2021 holds a type's test clips in source_test/ and target_test/
DCASE2021_TEST_FOLDERS = ("source_test", "target_test")  # and its evaluator scores each domain's clips alone
SPLIT_FOLDERS = {"train": "train", "test": "test", **{folder: "test" for folder in DCASE2021_TEST_FOLDERS}}
# folders a data set holds that are kept but not indexed: DCASE 2025's supplemental clean-machine and noise clips
UNREAD_FOLDERS = ("supplemental",)

SCHEMA = pa.schema([
    ("path", pa.string()),
    ("file_name", pa.string()),
    ("machine_type", pa.string()),
    ("machine_id", pa.string()),
    ("split", pa.string()),
    ("label", pa.string()),
    ("domain", pa.string()),
    ("attributes", pa.string()),
])


class LayoutError(RcmaeError):
    """The data root or one of its file names does not fit a DCASE layout."""


@dataclass
class ClipIndex:
    table: pa.Table
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) in lenient mode
    layout: str = "dcase"  # what was read: a key of LAYOUTS

    def __len__(self) -> int:
        return self.table.num_rows


LAYOUTS = {"dcase": "DCASE file names", "manifest": "a manifest (path, machine_type, machine_id, split, label)",
           "folders": "a folder tree <machine_type>/<machine_id>/train|test/"}  # `rcmae.data.own_recordings`


def parse_clip_name(path: Path) -> dict[str, str]:
    """Parse one clip path; raises LayoutError naming the file and the expected patterns."""
    stem, split_dir = path.stem, path.parent.name
    machine_type = path.parent.parent.name
    dir_split = _split_from_dir(split_dir)
    row = None
    if match := DCASE2020.match(stem):
        row = dict(machine_id=match["id"], label=match["label"], domain="source", attributes="")
    elif match := DCASE2020_UNLABELLED.match(stem):
        row = dict(machine_id=match["id"], label=UNKNOWN, domain="source", attributes="")
    elif match := DCASE2021.match(stem):
        row = dict(machine_id=match["id"], label=match["label"], domain=match["domain"],
                   attributes=match["attrs"] or "")
        dir_split = match["split"]
    elif match := DCASE2021_UNLABELLED.match(stem):
        row = dict(machine_id=match["id"], label=UNKNOWN, domain=match["domain"] or UNKNOWN, attributes="")
    if row is None:
        raise LayoutError(f"{path_text(path)}: file name fits no known grammar; expected one of: "
                          + "; ".join(EXPECTED_PATTERNS))
    if dir_split is None:
        raise LayoutError(f"{path_text(path)}: cannot tell the split; the clip must sit in a train/ or test/ folder "
                          f"(or source_test/, target_test/), not {split_dir!r}")
    if dir_split == "train" and row["label"] == UNKNOWN:
        raise LayoutError(f"{path_text(path)}: unlabelled file name in a train folder")
    if dir_split == "train" and row["label"] == "anomaly":
        raise LayoutError(f"{path_text(path)}: an anomalous clip in a train folder: training uses normal clips only, "
                          f"so it is left out (move it to test/ if it belongs there)")
    return dict(path=path_text(path), file_name=path_text(path.name), machine_type=path_text(machine_type),
                split=dir_split, **row)


def _split_from_dir(name: str) -> str | None:
    return SPLIT_FOLDERS.get(name)


def index_clips(root: str | Path, lenient: bool = False) -> ClipIndex:
    """Every .wav under `root` as a clip table row.

    `root` may be a data set root (holding dev_data/ and eval_data/), a dev_data folder, or a single
    machine type folder; a manifest file, or a folder tree of other names when no file in `root` has a DCASE name
    (`rcmae.data.own_recordings`). With `lenient`, names that fit no grammar are skipped and listed in
    `ClipIndex.skipped`; otherwise the first one raises LayoutError. Folders that cannot be read are always
    listed there (never passed over silently). Paths are kept as `path_text` (non-UTF-8 bytes as \\xNN).
    """
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"{path_text(root)}: data root does not exist")
    if root.is_file() and root.suffix.lower() in (".csv", ".parquet"):
        from rcmae.data.own_recordings import index_manifest

        return index_manifest(root, lenient)
    if not root.is_dir():
        raise LayoutError(f"{path_text(root)}: data root is neither a directory nor a manifest (.csv, .parquet)")
    rows, skipped, misfits = [], [], []

    def unreadable(error: OSError) -> None:
        skipped.append((path_text(error.filename), f"{path_text(error.filename)}: folder cannot be read "
                                                   f"({error.strerror}): its clips are left out"))

    visited: set[str] = set()  # each real folder once: a link back up the tree is reported, not walked again
    for folder, subfolders, files in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders[:] = []
            skipped.append((path_text(folder), f"{path_text(folder)}: a link to a folder already indexed "
                                               f"({path_text(real)}): a loop or a second way in, indexed once"))
            continue
        visited.add(real)
        for unread in sorted(set(subfolders) & set(UNREAD_FOLDERS)):
            log.info(f"index: {path_text(Path(folder) / unread)} not read (extra clips no split uses)")
        subfolders[:] = sorted(s for s in subfolders if s not in UNREAD_FOLDERS)
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() != ".wav" or not path.is_file():
                continue
            try:
                rows.append(parse_clip_name(path))
            except LayoutError as error:
                misfits.append((path, error))
    if misfits and not rows:
        from rcmae.data.own_recordings import index_folder_tree

        return index_folder_tree(root, [path for path, _ in misfits], skipped, lenient)
    if misfits and not lenient:
        raise misfits[0][1]
    skipped += [(path_text(path), str(error)) for path, error in misfits]
    if not rows:
        raise LayoutError(f"{path_text(root)}: no DCASE-layout .wav clips found"
                          + (f" ({len(skipped)} file(s) or folder(s) skipped: {skipped[0][1]})" if skipped else ""))
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return ClipIndex(table=table, skipped=skipped)


def reject_summary(rejects: list[tuple[str, str]], shown: int = 3) -> list[str]:
    """One line per kind of reason, with its count and the first few paths (a reason is "path: why")."""
    kinds: dict[str, list[str]] = {}
    for path, reason in rejects:
        why = reason.removeprefix(f"{path}: ")
        kinds.setdefault(re.split(r" \(|; |: ", why, maxsplit=1)[0], []).append(path)
    return [f"{len(paths)} x {kind}: {', '.join(paths[:shown])}" + (f" and {len(paths) - shown} more"
                                                                    if len(paths) > shown else "")
            for kind, paths in sorted(kinds.items(), key=lambda item: -len(item[1]))]
