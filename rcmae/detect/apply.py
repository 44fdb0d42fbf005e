"""Fitting the detector and scoring clips from streams of feature-table rows, in-process. The per-batch and
per-type steps (`TableEncoder`, `fit_machine`) are the ones `rcmae.distributed.inference` maps over a cluster
with Ray Data; here they run one batch at a time, so memory holds a batch and one machine type's features."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rcmae.data.classes import ClipClasses
from rcmae.data.feature_table import machine_keys
from rcmae.detect.calibration import fit_detector
from rcmae.detect.detector import Detector
from rcmae.detect.encode import TableEncoder, encoded_of
from rcmae.errors import DataError
from rcmae.sections import ScoreConfig


def fit_machine(encoded: pa.Table, classes: list[str], config: ScoreConfig, grid: tuple[int, int]) -> Detector:
    """The detector part of the machine IDs in `encoded` (the rows of one machine type, encoded by a model of this
    patch grid: each ID is fitted on its own clips, a few-shot ID with the type's pooled covariance). Rows are taken
    in path order, whatever order the encoding delivered them in: the same clips give the same detector."""
    encoded = encoded.sort_by([("path", "ascending")])
    return fit_detector(encoded_of(encoded, grid), machine_keys(encoded), ClipClasses.of_table(encoded, classes),
                        config, paths=encoded.column("path").to_pylist())


def fit_from_rows(model_dir: str | Path, train_rows: Iterable[pa.Table], classes: list[str],
                  config: ScoreConfig) -> Detector:
    """Encode train rows batch by batch into one Parquet file per machine type, then fit each type's IDs."""
    encoder = TableEncoder(model_dir)
    writers: dict[str, pq.ParquetWriter] = {}
    with tempfile.TemporaryDirectory(prefix="rcmae_detector_") as folder:
        for table in train_rows:
            encoded = encoder(table)
            keys = encoded["machine_type"]
            for key in pc.unique(keys).to_pylist():
                part = encoded.filter(pc.equal(keys, key))
                if key not in writers:
                    writers[key] = pq.ParquetWriter(Path(folder) / f"{len(writers):05d}.parquet", part.schema)
                writers[key].write_table(part)
        for writer in writers.values():
            writer.close()
        grid = encoder.checkpoint.features.grid
        return Detector.merge([fit_machine(pq.read_table(Path(folder) / f"{i:05d}.parquet"), classes, config, grid)
                               for i in range(len(writers))])


def score_rows(model_dir: str | Path, rows: Iterable[pa.Table]) -> pa.Table:
    """Metadata and `score_<method>` of every row (null for machines the model does not know)."""
    scorer = TableEncoder(model_dir, with_scores=True, keep_encoded=False)
    parts = [scorer(table) for table in rows]
    if not parts:
        raise DataError("no clips to score")
    return pa.concat_tables(parts)
