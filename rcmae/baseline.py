"""Train and evaluate the DCASE 2020 AE baseline (one model per machine type, as the official baseline)
through the same features, thresholds and evaluation files as RC-MAE."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rcmae.config import Config
from rcmae.data.feature_table import (
    META_COLUMNS,
    feature_shape,
    read_feature_table,
    specs_from_column,
    stream_rows,
    stream_specs,
)
from rcmae.data.run_folder import written_aside
from rcmae.detect.detector import gamma_threshold
from rcmae.errors import DataError
from rcmae.evaluate.results import write_evaluation
from rcmae.features import Normalizer
from rcmae.models.dcase_ae import DenseAE


def train_type_model(specs: np.ndarray, config: Config, seed: int) -> DenseAE:
    torch.manual_seed(seed)
    cfg = config.baseline
    model = DenseAE(n_mels=specs.shape[1], frames=cfg.frames)
    vectors = model.stack_frames(torch.from_numpy(specs)).reshape(-1, specs.shape[1] * cfg.frames)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(vectors), generator=generator).split(cfg.batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad()
            model.loss(vectors[idx]).backward()
            optimizer.step()
    return model


def run_baseline(config: Config, features_dir: str | Path, test_rows: Callable[[str], Iterable[pa.Table]],
                 out_dir: str | Path) -> dict:
    """Trains one AE per machine type on the train split of `features_dir` (one type's log-mels in memory at
    a time, no augmented variants), scores `test_rows(machine_type)` (feature-table batches of that type's
    test clips), writes CSVs and metrics.json."""
    started = time.time()
    normalizer = Normalizer.fit_stream(stream_specs(features_dir))
    shape = feature_shape(features_dir)
    train_types = sorted(pc.unique(read_feature_table(features_dir, ("train",), ["machine_type"])["machine_type"])
                         .to_pylist())
    rows, scores, decisions = [], [], []
    for i, machine_type in enumerate(train_types):
        only_type = pc.field("machine_type") == machine_type
        train = normalizer(np.concatenate([
            specs_from_column(t["features"], *shape)
            for t in stream_rows(features_dir, ["features"], ("train",), extra_filter=only_type)]))
        model = train_type_model(train, config, config.baseline.seed + i)
        threshold = gamma_threshold(model.clip_scores(torch.from_numpy(train)).numpy(),
                                    config.score.decision_percentile).value
        del train
        for table in test_rows(machine_type):
            type_scores = model.clip_scores(torch.from_numpy(normalizer(specs_from_column(table["features"], *shape))))
            rows += table.select(META_COLUMNS).to_pylist()
            scores += type_scores.tolist()
            decisions += (type_scores.numpy() > threshold).astype(int).tolist()
    if not rows:
        raise DataError(f"baseline: no test clips of the trained machine types {train_types}")
    with written_aside(out_dir, replace_whole=False) as staging:
        return write_evaluation(staging, rows, np.array(scores), np.array(decisions), config.score.max_fpr,
                                extra={"method": "dcase2020_ae", "train_seconds": time.time() - started})
