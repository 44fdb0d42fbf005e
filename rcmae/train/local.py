"""In-process training: the same loops as under Ray Train, with checkpoints in a local run folder.

Re-running with the same `run_dir` resumes after the last finished epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from rcmae.config import Config
from rcmae.features import Normalizer
from rcmae.train import stages
from rcmae.train.data import FeatureSet, labelled_batches, pair_batches, stage2_arrays
from rcmae.train.loops import finetune_loop, pretrain_loop


class LocalSession:
    rank, world_size = 0, 1

    def __init__(self, run_dir: str | Path, batches, keep: int = 2, device: str | None = None, verbose: bool = True):
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self._batches, self.keep, self.verbose = batches, keep, verbose
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def batches(self, epoch: int):
        return self._batches(epoch)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint_dir is not None:
            target = self.checkpoints / f"epoch_{metrics['epoch']:04d}"
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            for old in sorted(self.checkpoints.glob("epoch_*"))[:-self.keep]:
                shutil.rmtree(old)
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if self.verbose:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "seconds")
            print(f"[{metrics['stage']}] epoch {metrics['epoch']} {shown} ({metrics['seconds']:.1f}s)", flush=True)

    def restore(self) -> Path | None:
        found = sorted(self.checkpoints.glob("epoch_*")) if self.checkpoints.exists() else []
        return found[-1] if found else None


def pretrain_local(config: Config, features_dir: str | Path, run_dir: str | Path, verbose: bool = True) -> Path:
    train = FeatureSet.load(features_dir, splits=("train",))
    model, meta = stages.pretrain_start(config, features_dir)
    normalizer = Normalizer.from_dict(meta["normalizer"])

    def batches(epoch: int):
        rng = np.random.default_rng([config.pretrain.seed, epoch])
        return pair_batches(train.specs, train.augmented, normalizer, config.pretrain.batch_size, rng)

    session = LocalSession(run_dir, batches, config.scale.keep_checkpoints, verbose=verbose)
    pretrain_loop(session, model, config, meta)
    return stages.publish(session.restore(), run_dir)


def finetune_local(config: Config, features_dir: str | Path, pretrained_dir: str | Path, run_dir: str | Path,
                   verbose: bool = True) -> Path:
    train = FeatureSet.load(features_dir, splits=("train",))
    model, meta, classes = stages.finetune_start(config, features_dir, pretrained_dir)
    specs, labels = stage2_arrays(train, classes, config.finetune.use_augmented)
    normalizer = Normalizer.from_dict(meta["normalizer"])

    def batches(epoch: int):
        rng = np.random.default_rng([config.finetune.seed, epoch])
        return labelled_batches(specs, labels, normalizer, config.finetune.batch_size, rng)

    session = LocalSession(run_dir, batches, config.scale.keep_checkpoints, verbose=verbose)
    finetune_loop(session, model, config, meta)
    return stages.attach_detector(stages.publish(session.restore(), run_dir), features_dir)
