"""Run a stage where the config says: in-process (scale.num_workers == 0) or on Ray (Train for the training
stages, Data for batch inference).

A training stage holds its output folder (one writer at a time) and remembers the settings that made it
(`settings.json`): a re-run with the same settings resumes from its checkpoints (or returns the finished
model at once), a re-run with others stops naming them unless `force`, which clears the folder first.
Raising `epochs` is not a change of settings: it continues training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from rcmae import tracking
from rcmae.config import Config, recorded_section
from rcmae.data.run_folder import check_settings, owned
from rcmae.detect.detector import current_detector
from rcmae.models.checkpoint import DETECTOR, CheckpointError, read_meta
from rcmae.sections import ScaleConfig
from rcmae.stores import clear
from rcmae.train.stage import FINETUNE, PRETRAIN, Stage

SETTINGS = "settings.json"
MADE_HERE = ("checkpoints", "ray_results", "model", "metrics.jsonl", tracking.FOLDER, SETTINGS)


def stage_settings(made: dict, stage: Stage) -> dict:
    """The config sections a stage's model depends on (`made`: a config as a dict), epochs left out."""
    sections = {s: dict(made.get(s) or {}) for s in stage.depends_on}
    sections[stage.name].pop("epochs", None)
    return sections


def with_later_fields(recorded: dict, stage: Stage) -> dict:
    """Settings an older rcmae recorded, in this rcmae's layout (`config.recorded_section`: fields added since at
    the defaults that keep what rcmae did before them), so an old folder is not taken for one made with other
    settings."""
    upgraded = {section: recorded_section(section, recorded.get(section) or {}).to_dict() for section in recorded}
    return json.loads(json.dumps(stage_settings(upgraded, stage)))


def claim(out_dir: Path, stage: Stage, config: Config, force: bool) -> Path | None:
    """Check (or, with `force`, clear) what `out_dir` holds, record this run's settings, and return the
    stage's finished model when it is already there."""
    wanted = json.loads(json.dumps(stage_settings(config.to_dict(), stage)))  # as read back: lists, not tuples
    model_dir = out_dir / "model"
    if force:
        for name in MADE_HERE:
            clear(out_dir / name)
    recorded = out_dir / SETTINGS
    meta = None
    try:
        meta = read_meta(model_dir)
    except CheckpointError:
        pass
    if recorded.exists():
        check_settings(with_later_fields(json.loads(recorded.read_text()), stage), wanted, out_dir)
    elif meta is not None:  # a folder from before settings.json: its model's config says what made it
        check_settings(with_later_fields(stage_settings(meta.config, stage), stage), wanted, out_dir)
    recorded.write_text(json.dumps(wanted, indent=1))
    done = meta is not None and meta.stage == stage.name and meta.epoch == stage.section(config).epochs
    if done and stage == FINETUNE:  # an older model folder may lack its detector or hold an older one: the
        # stage resumes at its last epoch and only fits the detector again
        done = current_detector(meta.detector) and (model_dir / DETECTOR).is_file()
    return model_dir if done else None


@dataclass(frozen=True)
class EpochReports:
    """Where a training stage's epochs are reported besides its checkpoints (a sweep's trial reports them to Tune):
    in-process, a function called with each epoch's metrics; on Ray Train, its callbacks."""

    on_epoch: Callable[[dict], None] | None = None
    callbacks: tuple = ()


def train_pretrain(config: Config, features_dir: str | Path, out_dir: str | Path,
                   reports: EpochReports = EpochReports()) -> Path:
    """Stage 1, in-process (`scale.num_workers` 0) or on Ray Train: the one place that chooses."""
    if config.scale.num_workers == 0:
        from rcmae.train.local import pretrain_local

        return pretrain_local(config, features_dir, out_dir, on_epoch=reports.on_epoch)
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.distributed.train import pretrain_ray

    ensure_ray()
    return pretrain_ray(config, features_dir, out_dir, callbacks=list(reports.callbacks))


def train_finetune(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path,
                   reports: EpochReports = EpochReports()) -> Path:
    """Stage 2, in-process or on Ray Train, as `train_pretrain` chooses."""
    if config.scale.num_workers == 0:
        from rcmae.train.local import finetune_local

        return finetune_local(config, features_dir, pretrained_dir, out_dir, on_epoch=reports.on_epoch)
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.distributed.train import finetune_ray

    ensure_ray()
    return finetune_ray(config, features_dir, pretrained_dir, out_dir, callbacks=list(reports.callbacks))


def pretrain(config: Config, features_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    with owned(out_dir, "rcmae pretrain"):
        finished = claim(Path(out_dir), PRETRAIN, config, force)
        return finished if finished is not None else train_pretrain(config, features_dir, out_dir)


def finetune(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path,
             force: bool = False) -> Path:
    with owned(out_dir, "rcmae finetune"):
        finished = claim(Path(out_dir), FINETUNE, config, force)
        return (finished if finished is not None
                else train_finetune(config, features_dir, pretrained_dir, out_dir))


def score_test_split(scale: ScaleConfig, model_dir: str | Path, features_dir: str | Path) -> pa.Table:
    """Metadata and `score_<method>` of every usable test clip in the feature Parquet (in-process when
    `scale.num_workers` is 0, else by Ray Data actors)."""
    if scale.num_workers == 0:
        from rcmae.detect.apply import score_rows
        from rcmae.evaluate.test_split import feature_test_split

        return score_rows(model_dir, feature_test_split(features_dir))
    from rcmae.distributed.inference import score_features_ray
    from rcmae.distributed.runtime import ensure_ray

    ensure_ray()
    return score_features_ray(model_dir, features_dir, scale)
