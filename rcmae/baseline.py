"""The references RC-MAE is compared with, through the same features, thresholds and evaluation files: the
DCASE 2020 AE baseline (one model per machine type, as the official baseline) and the floor (a per-ID Gaussian
on each clip's log-mel mean and standard deviation, `rcmae.detect.floor`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rcmae.data.feature_table import (
    META_COLUMNS,
    feature_shape,
    machine_keys,
    read_feature_table,
    specs_from_column,
    stream_rows,
    stream_specs,
)
from rcmae.data.run_folder import written_aside
from rcmae.detect.floor import fit_floor, floor_scores
from rcmae.detect.thresholds import gamma_threshold
from rcmae.errors import DataError
from rcmae.evaluate.metrics import Metrics
from rcmae.evaluate.results import write_evaluation
from rcmae.features import Normalizer
from rcmae.models.dcase_ae import DenseAE
from rcmae.registry import REFERENCES
from rcmae.sections import BaselineConfig, ScoreConfig


def train_type_model(specs: np.ndarray, cfg: BaselineConfig, seed: int) -> DenseAE:
    torch.manual_seed(seed)
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


Scorer = Callable[[np.ndarray, list[str]], np.ndarray]  # normalised log-mels (N, F, T), machine keys -> scores


def fit_ae(train: np.ndarray, keys: list[str], config: BaselineConfig, seed: int) -> Scorer:
    model = train_type_model(train, config, seed)
    return lambda specs, keys: model.clip_scores(torch.from_numpy(specs)).numpy()


def fit_floor_scorer(train: np.ndarray, keys: list[str], config: BaselineConfig, seed: int) -> Scorer:
    gaussians = fit_floor(train, keys)
    return lambda specs, keys: floor_scores(gaussians, specs, keys)


def run_reference(name: str, baseline: BaselineConfig, score: ScoreConfig, features_dir: str | Path,
                  test_rows: Callable[[str], Iterable[pa.Table]], out_dir: str | Path,
                  families: dict[str, str] | None = None) -> Metrics:
    """Fits `rcmae.registry.REFERENCES[name]` per machine type on the train split of `features_dir` (one type's
    log-mels in memory at a time, no augmented variants), scores `test_rows(machine_type)` (feature-table batches
    of that type's test clips), writes CSVs and metrics.json (with per-family results when `families` names
    them)."""
    reference = REFERENCES[name]
    fit = reference.load()
    started = time.time()
    normalizer = Normalizer.fit_stream(stream_specs(features_dir))
    shape = feature_shape(features_dir)
    train_types = sorted(pc.unique(read_feature_table(features_dir, ("train",), ["machine_type"])["machine_type"])
                         .to_pylist())
    rows, scores, decisions = [], [], []
    for i, machine_type in enumerate(train_types):
        only_type = pc.field("machine_type") == machine_type
        tables = list(stream_rows(features_dir, ["features", "machine_type", "machine_id"], ("train",),
                                  extra_filter=only_type))
        train = normalizer(np.concatenate([specs_from_column(t["features"], *shape) for t in tables]))
        keys = [key for t in tables for key in machine_keys(t)]
        scorer = fit(train, keys, baseline, baseline.seed + i)
        train_scores, keys_array = scorer(train, keys), np.array(keys)
        groups = sorted(set(keys)) if reference.threshold_per_id else [None]
        thresholds = {key: gamma_threshold(train_scores if key is None else train_scores[keys_array == key],
                                           score.decision_percentile).value for key in groups}
        del train
        for table in test_rows(machine_type):
            test_keys = machine_keys(table)
            type_scores = scorer(normalizer(specs_from_column(table["features"], *shape)), test_keys)
            rows += table.select(META_COLUMNS).to_pylist()
            scores += type_scores.tolist()
            decisions += [int(s > thresholds[k if reference.threshold_per_id else None])
                          for s, k in zip(type_scores, test_keys)]
    if not rows:
        raise DataError(f"{name}: no test clips of the trained machine types {train_types}")
    with written_aside(out_dir, replace_whole=False) as staging:
        return write_evaluation(staging, rows, np.array(scores), np.array(decisions), score.max_fpr,
                                method=name, train_seconds=time.time() - started, families=families)
