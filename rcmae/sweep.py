"""A sweep's trial, above the stages: stage 1, stage 2 and the evaluation of one point of the search space, each
stage where its config says (`rcmae.stages.train_pretrain`, the one place that chooses in-process or Ray Train), its
epochs reported to Tune. `run_sweep` hands it to the Tune driver (`rcmae.distributed.tune`)."""

from __future__ import annotations

from pathlib import Path

from rcmae.config import Config
from rcmae.data.run_folder import sync, writing
from rcmae.distributed.tune import epoch_reporters, report_trial, run_tune, trial_config, trial_folder
from rcmae.evaluate.results import evaluate_checkpoint
from rcmae.stages import EpochReports, train_finetune, train_pretrain
from rcmae.stores import reading


def run_trial(params: dict, base: dict, normalize_weights: bool, features_dir: str, data_dir: str, trials_dir: str,
              report_epochs: bool) -> None:
    """One trial, in its own folder under `trials_dir`; with `report_epochs`, every epoch's losses go to Tune."""
    config = trial_config(Config.from_dict(base), params, normalize_weights)
    folder = trial_folder(trials_dir)
    reports = EpochReports(*epoch_reporters()) if report_epochs else EpochReports()
    with reading(features_dir) as features, writing(folder, f"rcmae tune trial {Path(str(folder)).name}") as out:
        pretrained = train_pretrain(config, features, out / "pretrain", reports)
        sync(out)
        model = train_finetune(config, features, pretrained, out / "finetune", reports)
        metrics = evaluate_checkpoint(model, data_dir, out / "evaluation")
        report_trial(metrics, model)


def run_sweep(space_path: str | Path, features_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
              force: bool = False, mlflow_uri: str | None = None) -> Path:
    """The sweep `space_path` describes, its trials run by `run_trial` (see `rcmae.distributed.tune.run_tune`)."""
    return run_tune(run_trial, space_path, features_dir, data_dir, out_dir, force=force, mlflow_uri=mlflow_uri)
