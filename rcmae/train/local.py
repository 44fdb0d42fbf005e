"""In-process training: the same loops as under Ray Train, with checkpoints in a local run folder.

Re-running with the same `run_dir` resumes after the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import torch

from rcmae import tracking
from rcmae.config import Config
from rcmae.data.feature_table import META_COLUMNS, stream_rows
from rcmae.detect.apply import fit_from_rows
from rcmae.detect.detector_files import save_detector
from rcmae.features import Normalizer
from rcmae.models.checkpoint import checkpoint_problem
from rcmae.train import setup
from rcmae.train.batches import BatchMaker, epoch_rng
from rcmae.train.loops import epoch_line, run_stage
from rcmae.train.stage import FINETUNE, PRETRAIN, Stage

log = logging.getLogger(__name__)


class LocalSession:
    rank, world_size = 0, 1

    def __init__(self, run_dir: str | Path, batches, epochs: int, keep: int = 2, device: str | None = None,
                 on_epoch: Callable[[dict], None] | None = None):
        self.run_dir = Path(run_dir)
        self.tensorboard_dir = self.run_dir / tracking.FOLDER
        self.mlflow = tracking.active_mlflow()
        self.on_epoch = on_epoch  # also told every epoch's metrics (a Tune trial reports them)
        self.checkpoints = self.run_dir / "checkpoints"
        self._batches, self.epochs, self.keep = batches, epochs, keep
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def batches(self, epoch: int):
        return self._batches(epoch)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint_dir is not None:  # copied aside, then renamed into place: a kill never leaves half a folder
            target = self.checkpoints / f"epoch_{metrics['epoch']:04d}"
            staging = self.checkpoints / f".{target.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.mkdir(parents=True)
                for part in Path(checkpoint_dir).iterdir():  # a flat folder; a full disk raises at once, by name
                    shutil.copy2(part, staging / part.name)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            for old in sorted(self.checkpoints.glob("epoch_*"))[:-self.keep]:
                shutil.rmtree(old)
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        log.info(epoch_line(metrics, self.epochs))
        if self.on_epoch is not None:
            self.on_epoch(metrics)

    def restore(self) -> Path | None:
        """The newest checkpoint that is whole; damaged ones are reported and passed over."""
        found = sorted(self.checkpoints.glob("epoch_*")) if self.checkpoints.exists() else []
        for folder in reversed(found):
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            log.warning(f"resume: skipping {folder} ({problem})")
        return None


def _session(config: Config, stage: Stage, features_dir: str | Path, run_dir: str | Path, normalizer: Normalizer,
             classes: list[str], on_epoch: Callable[[dict], None] | None) -> LocalSession:
    cfg = stage.section(config)
    maker = BatchMaker(stage, config, normalizer, classes, cfg.batch_size)
    columns = stage.columns(config)

    def batches(epoch: int):
        rng = epoch_rng(cfg.seed, epoch, 0)
        return maker(stream_rows(features_dir, columns, ("train",), rng=rng), rng)

    return LocalSession(run_dir, batches, cfg.epochs, config.scale.keep_checkpoints, on_epoch=on_epoch)


def pretrain_local(config: Config, features_dir: str | Path, run_dir: str | Path,
                   on_epoch: Callable[[dict], None] | None = None) -> Path:
    meta = setup.pretrain_start(config.augment, features_dir)
    session = _session(config, PRETRAIN, features_dir, run_dir, Normalizer.from_dict(meta.normalizer), [],
                       on_epoch)
    run_stage(session, PRETRAIN, PRETRAIN.start_model(config, meta), config, meta)
    return setup.publish(session.restore(), run_dir)


def finetune_local(config: Config, features_dir: str | Path, pretrained_dir: str | Path, run_dir: str | Path,
                   on_epoch: Callable[[dict], None] | None = None) -> Path:
    meta, classes = setup.finetune_start(config, features_dir, pretrained_dir)
    session = _session(config, FINETUNE, features_dir, run_dir, Normalizer.from_dict(meta.normalizer),
                       classes, on_epoch)
    run_stage(session, FINETUNE, FINETUNE.start_model(config, meta), config, meta)

    def fit(model_dir: Path) -> None:
        train_rows = stream_rows(features_dir, META_COLUMNS + ["features"], ("train",))
        save_detector(model_dir, fit_from_rows(model_dir, train_rows, classes, config.score))

    return setup.publish(session.restore(), run_dir, finish=fit)
