"""Train and evaluate the DCASE 2020 AE baseline (one model per machine type, as the official baseline)
through the same features, thresholds and evaluation files as RC-MAE."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rcmae.config import Config
from rcmae.evaluate.report_files import write_evaluation
from rcmae.evaluate.scoring import gamma_threshold
from rcmae.features import Normalizer
from rcmae.models.dcase_ae import DenseAE
from rcmae.train.data import FeatureSet


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


def run_baseline(config: Config, features_dir: str | Path, test: FeatureSet, out_dir: str | Path) -> dict:
    """Trains on the train split of `features_dir`, scores `test`, writes CSVs and metrics.json."""
    started = time.time()
    train = FeatureSet.load(features_dir, splits=("train",))
    normalizer = Normalizer.fit(train.specs)
    train_types = np.array([m["machine_type"] for m in train.meta])
    test_types = np.array([m["machine_type"] for m in test.meta])
    scores = np.zeros(len(test.meta))
    decisions = np.zeros(len(test.meta), dtype=int)
    for i, machine_type in enumerate(sorted(set(test_types))):
        if machine_type not in train_types:
            raise ValueError(f"baseline: no train clips for machine type {machine_type!r}")
        model = train_type_model(normalizer(train.specs[train_types == machine_type]), config, config.baseline.seed + i)
        train_scores = model.clip_scores(torch.from_numpy(normalizer(train.specs[train_types == machine_type])))
        threshold = gamma_threshold(train_scores.numpy(), config.score.decision_percentile)
        mask = test_types == machine_type
        scores[mask] = model.clip_scores(torch.from_numpy(normalizer(test.specs[mask]))).numpy()
        decisions[mask] = (scores[mask] > threshold).astype(int)
    return write_evaluation(out_dir, test.meta, scores, decisions, config.score.max_fpr,
                            extra={"method": "dcase2020_ae", "train_seconds": time.time() - started})
