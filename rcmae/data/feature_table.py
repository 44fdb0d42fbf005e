"""The feature Parquet that `rcmae augment` writes and every later stage reads: its schema, the builder of
its rows and its readers.

One row per clip: the clip table's columns, `error` (why the clip is unusable, else null), the log-mel
`features` (n_mels * n_frames float32, flattened), K `augmented` log-mels and their `provenance` (JSON).
Readers stream: a split at paper size (128 x 320 log-mels, K = 2) is ~0.5 MB per clip in Arrow, so no
reader here holds a split, its variants or Python lists of features in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rcmae.data.layout import SCHEMA as CLIP_SCHEMA
from rcmae.errors import DataError

FEATURE_SCHEMA = pa.schema(list(CLIP_SCHEMA) + [
    pa.field("error", pa.string()),
    pa.field("n_mels", pa.int32()),
    pa.field("n_frames", pa.int32()),
    pa.field("features", pa.list_(pa.float32())),
    pa.field("augmented", pa.list_(pa.list_(pa.float32()))),
    pa.field("provenance", pa.string()),
])
META_COLUMNS = ["path", "file_name", "machine_type", "machine_id", "split", "label", "domain", "attributes"]


def feature_rows(clips: list[dict], features: dict[int, np.ndarray], augmented: dict[int, list],
                 provenance: dict[int, list], n_mels: int, n_frames: int) -> pa.Table:
    """The feature table of a batch of clips: `clips[i]` holds the clip-table columns and `error`; the dicts
    hold, for clips without an error, their log-mel, augmented log-mels and provenance records."""
    columns: dict[str, list] = {name: [] for name in FEATURE_SCHEMA.names}
    for i, clip in enumerate(clips):
        failed = clip["error"] is not None
        for name in CLIP_SCHEMA.names:
            columns[name].append(clip[name])
        columns["error"].append(clip["error"])
        columns["n_mels"].append(n_mels)
        columns["n_frames"].append(n_frames)
        columns["features"].append(None if failed else features[i].reshape(-1))
        columns["augmented"].append([] if failed else augmented[i])
        columns["provenance"].append(json.dumps([] if failed else provenance[i]))
    return pa.Table.from_pydict(columns, schema=FEATURE_SCHEMA)


def machine_key(machine_type: str, machine_id: str) -> str:
    return f"{machine_type}/{machine_id}"


def machine_keys(table: pa.Table | pa.RecordBatch) -> list[str]:
    return [machine_key(t, i) for t, i in zip(table.column("machine_type").to_pylist(),
                                              table.column("machine_id").to_pylist())]


def feature_dataset(folder: str | Path) -> ds.Dataset:
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: feature folder not found (run `rcmae augment` first)")
    return ds.dataset(str(folder), format="parquet")


def usable(splits: tuple[str, ...] | None = None) -> pc.Expression:
    """Rows without errors, of `splits` when given."""
    keep = pc.is_null(pc.field("error"))
    return keep & pc.field("split").isin(list(splits)) if splits else keep


def read_feature_table(folder: str | Path, splits: tuple[str, ...] | None = None,
                       columns: list[str] | None = None) -> pa.Table:
    """Usable rows of `splits`, `columns` only: for small columns (metadata, scores), never a split's features."""
    return feature_dataset(folder).to_table(filter=usable(splits), columns=columns)


def stream_rows(folder: str | Path, columns: list[str], splits: tuple[str, ...] | None = None,
                extra_filter: pc.Expression | None = None, batch_rows: int = 256,
                rng: np.random.Generator | None = None) -> Iterator[pa.Table]:
    """Usable rows, `batch_rows` at a time; with `rng`, files come in a random order (a new one per draw)."""
    dataset = feature_dataset(folder)
    keep = usable(splits) if extra_filter is None else usable(splits) & extra_filter
    fragments = list(dataset.get_fragments())
    order = rng.permutation(len(fragments)) if rng is not None else range(len(fragments))
    for i in order:
        for batch in fragments[i].to_batches(columns=columns, filter=keep, batch_size=batch_rows):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


def specs_from_column(column: pa.ChunkedArray | pa.Array, n_mels: int, n_frames: int) -> np.ndarray:
    """A list<float32> column of flattened log-mels as (N, n_mels, n_frames)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, n_mels, n_frames)


def pick_variants(column: pa.ChunkedArray | pa.Array, rng: np.random.Generator, n_mels: int,
                  n_frames: int) -> np.ndarray:
    """One augmented log-mel per row, drawn uniformly from the row's variants: (N, n_mels, n_frames)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    counts = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if counts.size and counts.min() == 0:
        raise DataError("a clip has no augmented variant to pair with (run `rcmae augment` with --variants >= 1)")
    starts = column.offsets.to_numpy()[:-1]
    chosen = column.values.take(pa.array(starts + np.floor(rng.random(len(counts)) * counts).astype(np.int64)))
    return specs_from_column(chosen, n_mels, n_frames)


def feature_shape(folder: str | Path) -> tuple[int, int]:
    """(n_mels, n_frames) of the folder's log-mels."""
    for table in stream_rows(folder, ["n_mels", "n_frames"], batch_rows=1):
        return int(table["n_mels"][0].as_py()), int(table["n_frames"][0].as_py())
    raise DataError(f"{folder}: no usable clips")


def stream_specs(folder: str | Path, splits: tuple[str, ...] = ("train",), batch_rows: int = 256):
    """Original log-mels of `splits`, (B, F, T) at a time."""
    shape = feature_shape(folder)
    for table in stream_rows(folder, ["features"], splits, batch_rows=batch_rows):
        yield specs_from_column(table["features"], *shape)


def fewest_variants(folder: str | Path, splits: tuple[str, ...] = ("train",)) -> int:
    """The smallest number of augmented variants any usable clip of `splits` has (from provenance)."""
    fewest = None
    for table in stream_rows(folder, ["provenance"], splits, batch_rows=4096):
        counts = [len(json.loads(p)) for p in table["provenance"].to_pylist()]
        fewest = min(counts + ([fewest] if fewest is not None else []))
    if fewest is None:
        raise DataError(f"{folder}: no usable clips in splits {splits}")
    return fewest


def write_synthetic_features(folder: str | Path, clips: int, machine_ids: int = 20, n_mels: int = 128,
                             n_frames: int = 320, variants: int = 2, rows_per_file: int = 64, seed: int = 0,
                             shuffled: bool = True) -> Path:
    """`clips` train rows of random log-mels at the given shape (paper size by default) for scale tests and
    benchmarks; `shuffled` writes them in a random order, as the augmentation pipeline does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(clips) if shuffled else np.arange(clips)
    size = n_mels * n_frames
    for part, start in enumerate(range(0, clips, rows_per_file)):
        rows = order[start:start + rows_per_file]
        ids = [f"{i * machine_ids // clips:02d}" for i in rows]
        values = rng.standard_normal((len(rows), 1 + variants, size), dtype=np.float32)
        names = [f"normal_id_{m}_{i:08d}.wav" for m, i in zip(ids, rows)]
        flat = pa.array(values[:, 0].reshape(-1))
        augmented = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(rows) * variants + 1, variants, dtype=np.int32)),
            pa.ListArray.from_arrays(pa.array(np.arange(0, len(rows) * variants + 1, dtype=np.int32) * size),
                                     pa.array(values[:, 1:].reshape(-1))))
        table = pa.table({
            "path": [f"/synthetic/fan/train/{n}" for n in names], "file_name": names,
            "machine_type": ["fan"] * len(rows), "machine_id": ids, "split": ["train"] * len(rows),
            "label": ["normal"] * len(rows), "domain": ["source"] * len(rows), "attributes": [""] * len(rows),
            "error": pa.nulls(len(rows), pa.string()), "n_mels": pa.array([n_mels] * len(rows), pa.int32()),
            "n_frames": pa.array([n_frames] * len(rows), pa.int32()),
            "features": pa.ListArray.from_arrays(pa.array(np.arange(len(rows) + 1, dtype=np.int32) * size), flat),
            "augmented": augmented,
            "provenance": [json.dumps([{"variant": v} for v in range(variants)])] * len(rows),
        }, schema=FEATURE_SCHEMA)
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    return folder
