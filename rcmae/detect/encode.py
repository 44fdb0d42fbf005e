"""From log-mels to what the detector reads: pooled encoder features, embeddings and ID log-probabilities,
for arrays (`encode_all`) and for feature-table batches (`TableEncoder`, the step that batch inference maps
over the feature Parquet, in-process or in Ray Data actors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from rcmae.data.classes import ClipClasses, machines_of
from rcmae.data.feature_table import META_COLUMNS, machine_keys, specs_from_column
from rcmae.detect.detector import Detector, Encoded, anomaly_scores
from rcmae.detect.detector_files import check_fits, load_detector
from rcmae.detect.floor import clip_statistics
from rcmae.detect.patches import PATCH_DIMS, project_tokens
from rcmae.detect.rhythm import envelope_autocorrelation
from rcmae.detect.scores import patch_maps
from rcmae.features import Normalizer
from rcmae.models.checkpoint import DETECTOR, load_checkpoint
from rcmae.models.mae import RCMAE
from rcmae.registry import SCORES
from rcmae.stores import fetched

ENCODED_COLUMNS = ("pooled", "embedding", "log_probs", "rhythm", "patches", "stats")
MAP_COLUMN = "patch_map"


def score_column(method: str) -> str:
    """The column of a scored table holding `method`'s scores (null for machines the model does not know)."""
    return f"score_{method}"


def score_values(table: pa.Table, method: str) -> np.ndarray:
    """`method`'s scores as floats (NaN where null)."""
    return table[score_column(method)].to_numpy(zero_copy_only=False).astype(float)


@torch.no_grad()
def encode_all(model: RCMAE, specs: np.ndarray, normalizer: Normalizer, batch_size: int = 64,
               device: str | torch.device = "cpu") -> Encoded:
    """Pooled features, embeddings, ID log-probabilities, the rhythm, the projected patch tokens and the band
    statistics of raw log-mels (N, F, T); the statistics of the normalised log-mels, as the floor reads them (the
    shrinkage of their Gaussian is not invariant to each band's scale)."""
    model.eval().to(device)
    pooled_parts, embeddings, log_probs, patches = [], [], [], []
    rows, cols = model.feature_config.grid
    for start in range(0, len(specs), batch_size):
        batch = torch.as_tensor(normalizer(specs[start:start + batch_size]), dtype=torch.float32, device=device)
        pooled, z, tokens = model.embed(batch)
        pooled_parts.append(pooled.float().cpu().numpy())
        embeddings.append(F.normalize(z.float(), dim=1).cpu().numpy())
        patches.append(project_tokens(tokens.float().cpu().numpy()).reshape(len(batch), rows, cols, -1))
        if model.classifier is not None:
            log_probs.append(F.log_softmax(model.classify(pooled).float(), dim=1).cpu().numpy())
    return Encoded(np.concatenate(pooled_parts), np.concatenate(embeddings),
                   np.concatenate(log_probs) if log_probs else np.zeros((len(specs), 0)),
                   envelope_autocorrelation(specs), np.concatenate(patches), clip_statistics(normalizer(specs)))


def _list_column(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.float32)
    offsets = np.arange(len(values) + 1, dtype=np.int32) * values.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def _matrix(column: pa.ChunkedArray | pa.Array, width: int | None = None) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), -1 if width is None else width)


def encoded_of(table: pa.Table, grid: tuple[int, int]) -> Encoded:
    """The `Encoded` arrays of a table that `TableEncoder` wrote for a model of this patch grid."""
    return Encoded(_matrix(table["pooled"]).astype(np.float64), _matrix(table["embedding"]),
                   _matrix(table["log_probs"], len(table["log_probs"][0]) if table.num_rows else 0),
                   _matrix(table["rhythm"]).astype(np.float64),
                   _matrix(table["patches"]).reshape(table.num_rows, *grid, PATCH_DIMS),
                   _matrix(table["stats"]).astype(np.float64))


class TableEncoder:
    """Feature-table rows -> their metadata plus the `Encoded` columns; with a detector in the model folder, also
    `score_<method>` for every score method (None when the row's machine is unknown) and, `with_maps`, each clip's
    anomaly map (`MAP_COLUMN`, rows x cols values of the patch grid, row-major)."""

    def __init__(self, model_dir: str | Path, device: str | None = None, with_scores: bool = False,
                 keep_encoded: bool = True, with_maps: bool = False):
        self.keep_encoded = keep_encoded  # False: metadata and scores only (what evaluation keeps of a clip)
        self.with_maps = with_maps and with_scores
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model_dir = fetched(model_dir)  # a store URI (an actor on another node than the run's driver): a local copy
        self.checkpoint = load_checkpoint(model_dir, device=self.device)
        self.detector: Detector | None = load_detector(model_dir) if with_scores else None
        features = self.checkpoint.features
        self.shape = (features.n_mels, features.n_frames)
        if self.detector is not None:
            probe = encode_all(self.checkpoint.model, np.zeros((1, *self.shape), dtype=np.float32),
                               self.checkpoint.normalizer, device=self.device)
            check_fits(self.detector, probe, Path(model_dir) / DETECTOR)

    def __call__(self, table: pa.Table) -> pa.Table:
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pandas(table, preserve_index=False)
        specs = specs_from_column(table["features"], *self.shape)
        encoded = encode_all(self.checkpoint.model, specs, self.checkpoint.normalizer, device=self.device)
        meta = table.select([c for c in META_COLUMNS if c in table.column_names])
        out = meta.append_column("pooled", _list_column(encoded.pooled))
        out = out.append_column("embedding", _list_column(encoded.embeddings))
        out = out.append_column("log_probs", _list_column(encoded.log_probs))
        out = out.append_column("rhythm", _list_column(encoded.rhythm))
        out = out.append_column("patches", _list_column(encoded.patches.reshape(len(encoded.patches), -1)))
        out = out.append_column("stats", _list_column(encoded.stats))
        if self.detector is not None:
            out = add_scores(out, encoded, self.detector, self.checkpoint.classes)
        if self.with_maps:
            out = add_maps(out, encoded, self.detector, machines_of(self.checkpoint.classes))
        return out if self.keep_encoded else out.drop_columns(list(ENCODED_COLUMNS))


def add_scores(table: pa.Table, encoded: Encoded, detector: Detector, classes: list[str]) -> pa.Table:
    """`score_<method>` columns; rows of machines the detector does not know get nulls (reported by callers)."""
    keys = machine_keys(table)
    machines = set(machines_of(classes))
    known = np.array([key in detector.centroids and key in machines for key in keys])
    rows = np.flatnonzero(known)
    clips = ClipClasses.of_table(table, classes).select(rows)
    for method in SCORES:
        values = np.full(len(keys), np.nan)
        if rows.size:
            values[rows] = anomaly_scores(method, encoded.select(rows), [keys[i] for i in rows], clips, detector)
        table = table.append_column(score_column(method), pa.array(values, mask=~known))
    return table


def add_maps(table: pa.Table, encoded: Encoded, detector: Detector, machines: list[str]) -> pa.Table:
    """The `MAP_COLUMN` of each clip (null for machines the detector does not know)."""
    keys = machine_keys(table)
    known = np.array([key in detector.centroids and key in machines for key in keys])
    rows = np.flatnonzero(known)
    maps = np.zeros((len(keys), int(np.prod(encoded.patches.shape[1:3]))), dtype=np.float32)
    if rows.size:
        maps[rows] = patch_maps(encoded.select(rows), [keys[i] for i in rows], detector).reshape(rows.size, -1)
    column = _list_column(maps)
    return table.append_column(MAP_COLUMN, pa.ListArray.from_arrays(column.offsets, column.values,
                                                                    mask=pa.array(~known)))


def map_values(table: pa.Table, grid: tuple[int, int]) -> np.ndarray:
    """(N, rows, cols) anomaly maps of a table `TableEncoder(with_maps=True)` wrote (NaN where null)."""
    column = table[MAP_COLUMN].combine_chunks()
    maps = np.full((table.num_rows, *grid), np.nan)
    valid = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
    if valid.size:
        maps[valid] = _matrix(column.take(pa.array(valid))).reshape(valid.size, *grid)
    return maps
