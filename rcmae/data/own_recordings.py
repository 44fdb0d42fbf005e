"""Recordings that are not named as DCASE names them, indexed into the same clip table (`rcmae.data.layout`).

- A manifest (CSV or Parquet): one row per clip, columns `path, machine_type, machine_id, split, label` and optional
  `domain, attributes`; `path` relative to the manifest's folder (or absolute), `split` train or test, `label`
  normal, anomaly or empty (an unlabelled test clip).
- A folder tree `ROOT/<machine_type>/<machine_id>/{train,test}/...`, any file names: a clip is anomalous when its
  name or a folder below the split folder says `anomaly`, `abnormal` or `ng`, normal when it says `normal` or `ok`;
  train clips without either word are normal, test clips without one unlabelled.

A clip that cannot be placed is an error naming it and the reason (in lenient mode: listed and skipped).
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rcmae.data.layout import SCHEMA, SPLIT_FOLDERS, UNKNOWN, ClipIndex, LayoutError
from rcmae.data.paths import path_text

MANIFEST_COLUMNS = ("path", "machine_type", "machine_id", "split", "label")
LABEL_WORDS = {"normal": "normal", "ok": "normal", "anomaly": "anomaly", "abnormal": "anomaly", "ng": "anomaly"}
LABELS = ("normal", "anomaly")


def read_manifest(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in SCHEMA.names}))
    except (pa.ArrowInvalid, OSError) as error:
        raise LayoutError(f"{path_text(path)}: not a readable manifest (CSV or Parquet): {error}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in table.column_names]
    if missing:
        raise LayoutError(f"{path_text(path)}: manifest lacks the column(s) {', '.join(missing)} (it needs "
                          f"{', '.join(MANIFEST_COLUMNS)}; domain and attributes are optional)")
    return table


def manifest_row(entry: dict, folder: Path, manifest: Path) -> dict:
    """One manifest entry as a clip-table row; raises LayoutError naming the manifest line's clip and the reason."""
    given = str(entry.get("path") or "")
    path = Path(given) if Path(given).is_absolute() else folder / given
    where = f"{path_text(manifest)}: {given or '(empty path)'}"
    for column in ("machine_type", "machine_id"):
        if not str(entry.get(column) or "").strip():
            raise LayoutError(f"{where}: no {column}")
    split = str(entry.get("split") or "")
    label = str(entry.get("label") or "") or ("normal" if split == "train" else UNKNOWN)
    if split not in ("train", "test"):
        raise LayoutError(f"{where}: split {split!r} is neither train nor test")
    if label not in (*LABELS, UNKNOWN):
        raise LayoutError(f"{where}: label {label!r} is none of normal, anomaly or empty (unlabelled)")
    if not path.is_file():
        raise LayoutError(f"{where}: no such file ({path_text(path)})")
    return train_checked(dict(path=path_text(path.resolve()), file_name=path_text(path.name),
                              machine_type=str(entry["machine_type"]).strip(),
                              machine_id=str(entry["machine_id"]).strip(), split=split, label=label,
                              domain=str(entry.get("domain") or "source"),
                              attributes=str(entry.get("attributes") or "")))


def index_manifest(manifest: Path, lenient: bool = False) -> ClipIndex:
    rows, skipped = [], []
    for entry in read_manifest(manifest).to_pylist():
        try:
            rows.append(manifest_row(entry, manifest.parent, manifest))
        except LayoutError as error:
            if not lenient:
                raise
            skipped.append((str(entry.get("path")), str(error)))
    if not rows:
        raise LayoutError(f"{path_text(manifest)}: the manifest places no clip"
                          + (f" ({len(skipped)} skipped: {skipped[0][1]})" if skipped else ""))
    return ClipIndex(pa.Table.from_pylist(rows, schema=SCHEMA), skipped, layout="manifest")


def label_in(words: list[str]) -> str | None:
    """The label the words of a clip's name and folders say, None when they say none; both is an error."""
    said = {LABEL_WORDS[word] for word in words if word in LABEL_WORDS}
    if len(said) > 1:
        raise ValueError("it says both normal and anomalous")
    return said.pop() if said else None


def folder_tree_row(path: Path, root: Path) -> dict:
    """A clip of `ROOT/<machine_type>/<machine_id>/{train,test}/...` as a clip-table row."""
    parts = path.relative_to(root).parts
    splits = [i for i, part in enumerate(parts[:-1]) if part in SPLIT_FOLDERS]
    if not splits or splits[-1] < 2:
        raise LayoutError(f"{path_text(path)}: not in ROOT/<machine_type>/<machine_id>/train|test/ (and its name "
                          f"is not a DCASE one)")
    at = splits[-1]
    words = [w for part in (*parts[at + 1:-1], path.stem) for w in re.split(r"[^a-z0-9]+", part.lower()) if w]
    try:
        label = label_in(words)
    except ValueError as why:
        raise LayoutError(f"{path_text(path)}: cannot tell its label: {why}") from None
    split = SPLIT_FOLDERS[parts[at]]
    return train_checked(dict(path=path_text(path), file_name=path_text(path.name),
                              machine_type=path_text(parts[at - 2]), machine_id=path_text(parts[at - 1]),
                              split=split, label=label or ("normal" if split == "train" else UNKNOWN),
                              domain="source", attributes=""))


def index_folder_tree(root: Path, paths: list[Path], skipped: list[tuple[str, str]], lenient: bool) -> ClipIndex:
    rows = []
    for path in paths:
        try:
            rows.append(folder_tree_row(path, root))
        except LayoutError as error:
            if not lenient:
                raise
            skipped.append((path_text(path), str(error)))
    if not rows:
        raise LayoutError(f"{path_text(root)}: no clips found in a DCASE layout or in "
                          f"ROOT/<machine_type>/<machine_id>/train|test/"
                          + (f" ({len(skipped)} skipped: {skipped[0][1]})" if skipped else ""))
    return ClipIndex(pa.Table.from_pylist(rows, schema=SCHEMA), skipped, layout="folders")


def train_checked(row: dict) -> dict:
    """Training uses normal clips only: an anomalous train clip is an error (as in the DCASE layouts)."""
    if row["split"] == "train" and row["label"] != "normal":
        raise LayoutError(f"{row['path']}: a train clip labelled {row['label']}: training uses normal clips only "
                          f"(move it to test/ if it belongs there)")
    return row
