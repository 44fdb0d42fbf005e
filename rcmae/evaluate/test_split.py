"""Test clips as log-mel rows, a batch at a time: from the feature Parquet that `rcmae augment` wrote
(`feature_test_split`) or read from a data folder (`data_test_split`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rcmae.augment.featurize import featurize_table
from rcmae.data.feature_table import META_COLUMNS, stream_rows
from rcmae.data.layout import index_clips, reject_summary
from rcmae.errors import DataError
from rcmae.sections import AudioConfig, FeatureConfig

log = logging.getLogger(__name__)


def featurized_rows(clips: pa.Table, audio: AudioConfig, features: FeatureConfig,
                    batch_rows: int = 64) -> Iterator[pa.Table]:
    """Log-mels of the clips a batch at a time; unreadable clips are left out and logged as warnings."""
    unusable = []
    for start in range(0, clips.num_rows, batch_rows):
        table = featurize_table(clips.slice(start, batch_rows), audio, features)
        bad = table.filter(pc.invert(pc.is_null(table["error"])))
        unusable += zip(bad["path"].to_pylist(), bad["error"].to_pylist())
        usable = table.filter(pc.is_null(table["error"]))
        if usable.num_rows:
            yield usable
    for line in reject_summary(unusable):
        log.warning(f"skipped: {line}")


def data_test_split(data_dir: str | Path, audio: AudioConfig, features: FeatureConfig,
                    machine_type: str | None = None) -> Iterator[pa.Table]:
    """Features of every readable test clip (of one machine type when given) under `data_dir` (names outside
    the grammar are reported)."""
    index = index_clips(data_dir, lenient=True)
    for line in reject_summary(index.skipped):
        log.warning(f"skipped: {line}")
    clips = index.table.filter(pc.field("split") == "test")
    if clips.num_rows == 0:
        raise DataError(f"{data_dir}: no test clips to evaluate")
    if machine_type is not None:
        clips = clips.filter(pc.field("machine_type") == machine_type)
    return featurized_rows(clips, audio, features)


def feature_test_split(features_dir: str | Path, machine_type: str | None = None,
                            batch_rows: int = 256) -> Iterator[pa.Table]:
    """The test clips' log-mels (of one machine type when given) that the augmentation pipeline wrote."""
    only_type = None if machine_type is None else pc.field("machine_type") == machine_type
    return stream_rows(features_dir, META_COLUMNS + ["features"], ("test",), extra_filter=only_type,
                       batch_rows=batch_rows)


