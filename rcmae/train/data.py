"""Training inputs from the feature Parquet: in-memory feature sets and the per-epoch batch makers
shared by the in-process runner and the Ray Train workers (which get their rows from Ray Data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from rcmae.features import Normalizer

META_COLUMNS = ["path", "file_name", "machine_type", "machine_id", "split", "label", "domain"]


def machine_key(machine_type: str, machine_id: str) -> str:
    return f"{machine_type}/{machine_id}"


def read_feature_table(folder: str | Path, splits: tuple[str, ...] | None = None,
                       columns: list[str] | None = None) -> pa.Table:
    """Rows without errors from the feature Parquet folder written by `rcmae augment`."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: feature folder not found (run `rcmae augment` first)")
    dataset = ds.dataset(str(folder), format="parquet")
    keep = pc.is_null(pc.field("error"))
    if splits:
        keep = keep & pc.field("split").isin(list(splits))
    return dataset.to_table(filter=keep, columns=columns)


def specs_from_column(column: pa.ChunkedArray | pa.Array, n_mels: int, n_frames: int) -> np.ndarray:
    """A list<float32> column of flattened log-mels as (N, n_mels, n_frames)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, n_mels, n_frames)


def stream_train_specs(folder: str | Path, batch_rows: int = 256):
    """Original train log-mels, (B, F, T) at a time, without loading the set (or its variants) at once."""
    dataset = ds.dataset(str(folder), format="parquet")
    keep = pc.is_null(pc.field("error")) & (pc.field("split") == "train")
    for batch in dataset.to_batches(filter=keep, columns=["features", "n_mels", "n_frames"], batch_size=batch_rows):
        if batch.num_rows:
            yield specs_from_column(batch.column("features"), batch.column("n_mels")[0].as_py(),
                                    batch.column("n_frames")[0].as_py())


def train_classes(folder: str | Path) -> list[str]:
    """Sorted machine keys of the usable train clips: the stage-2 classes."""
    table = read_feature_table(folder, ("train",), columns=["machine_type", "machine_id"])
    return sorted({machine_key(t, i) for t, i in zip(table["machine_type"].to_pylist(),
                                                     table["machine_id"].to_pylist())})


@dataclass
class FeatureSet:
    """Clips in memory: metadata, raw log-mels (N, F, T) and augmented variants (N, K, F, T)."""

    meta: list[dict]
    specs: np.ndarray
    augmented: np.ndarray | None

    @classmethod
    def load(cls, folder: str | Path, splits: tuple[str, ...] | None = None, augmented: bool = True) -> "FeatureSet":
        columns = META_COLUMNS + ["n_mels", "n_frames", "features"] + (["augmented"] if augmented else [])
        table = read_feature_table(folder, splits, columns)
        if table.num_rows == 0:
            raise ValueError(f"{folder}: no usable clips for splits {splits}")
        return cls.from_table(table)

    @classmethod
    def from_table(cls, table: pa.Table) -> "FeatureSet":
        n_mels, n_frames = table["n_mels"][0].as_py(), table["n_frames"][0].as_py()
        specs = specs_from_column(table["features"], n_mels, n_frames)
        augmented = None
        if "augmented" not in table.column_names:
            return cls(meta=table.select(META_COLUMNS).to_pylist(), specs=specs, augmented=None)
        counts = pc.list_value_length(table["augmented"]).to_numpy(zero_copy_only=False)
        if counts.size and counts.min() > 0:
            k = int(counts.min())  # every clip offers the same number of variants to sample from
            flat = table["augmented"].combine_chunks()
            per_clip = [flat[i].values.slice(0, k).flatten() for i in range(len(flat))]
            augmented = np.stack([v.to_numpy(zero_copy_only=False) for v in per_clip]).reshape(-1, k, n_mels, n_frames)
        meta = table.select(META_COLUMNS).to_pylist()
        return cls(meta=meta, specs=specs, augmented=augmented)

    def keys(self) -> list[str]:
        return [machine_key(m["machine_type"], m["machine_id"]) for m in self.meta]


def pair_batches(specs: np.ndarray, augmented: np.ndarray, normalizer: Normalizer, batch_size: int,
                 rng: np.random.Generator):
    """Stage-1 batches: each clip with one of its augmented variants, drawn afresh every epoch."""
    order = rng.permutation(len(specs))
    for start in range(0, len(order) - 1, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:  # contrastive and covariance terms need two samples
            break
        variant = rng.integers(0, augmented.shape[1], len(idx))
        yield {"original": normalizer(specs[idx]).astype(np.float32),
               "augmented": normalizer(augmented[idx, variant]).astype(np.float32)}


def labelled_batches(specs: np.ndarray, labels: np.ndarray, normalizer: Normalizer, batch_size: int,
                     rng: np.random.Generator):
    """Stage-2 batches of (spec, machine-ID class index)."""
    order = rng.permutation(len(specs))
    for start in range(0, len(order) - 1, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:
            break
        yield {"specs": normalizer(specs[idx]).astype(np.float32), "labels": labels[idx].astype(np.int64)}


def stage2_arrays(features: FeatureSet, classes: list[str], use_augmented: bool) -> tuple[np.ndarray, np.ndarray]:
    """Train specs (plus their augmented variants, labels carried over) and class indices."""
    index = {key: i for i, key in enumerate(classes)}
    labels = np.array([index[key] for key in features.keys()])
    if not use_augmented or features.augmented is None:
        return features.specs, labels
    k = features.augmented.shape[1]
    specs = np.concatenate([features.specs, features.augmented.reshape(-1, *features.specs.shape[1:])])
    return specs, np.concatenate([labels, np.repeat(labels, k)])
