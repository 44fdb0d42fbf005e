"""Both stages under Ray Train: a `TorchTrainer` per stage, DDP over `num_workers` (gloo on CPU, NCCL on
GPU), the feature Parquet streamed with Ray Data (`get_dataset_shard` + `iter_batches`), a checkpoint
reported with its metrics every epoch, the best N kept, and `FailureConfig` restarts that resume from the
last checkpoint. Running again with the same run folder resumes instead of restarting.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rcmae import tracking
from rcmae.config import Config
from rcmae.data.feature_table import read_feature_table
from rcmae.detect.detector_files import save_detector
from rcmae.distributed.inference import fit_detector_ray, usable_rows
from rcmae.distributed.ray_internals import quiet_train_report_lines
from rcmae.distributed.runtime import require_group_feasible, scaling_plan
from rcmae.features import Normalizer
from rcmae.interrupts import off_the_main_thread
from rcmae.logs import current_level
from rcmae.models.checkpoint import CheckpointMeta
from rcmae.stores import shared
from rcmae.tracking import MlflowTarget
from rcmae.train import setup
from rcmae.train.batches import BatchMaker, epoch_rng
from rcmae.train.loops import epoch_line, run_stage
from rcmae.train.stage import FINETUNE, PRETRAIN, STAGES, Stage, StageName

log = logging.getLogger(__name__)
SETUP = "setup"  # the one key of Ray Train's `train_loop_config`: a `WorkerSetup`


@dataclass(frozen=True)
class WorkerSetup:
    """What the driver hands every Ray Train worker of a stage."""

    stage: StageName
    config: Config
    meta: CheckpointMeta  # what the stage's checkpoints carry (normaliser; stage 2: classes, stage 1's folder)
    log_level: int        # the driver's rcmae log level
    tensorboard_dir: str  # where rank 0 writes the stage's event files
    mlflow: MlflowTarget | None


class RaySession:
    """The `Session` of a Ray Train worker."""

    def __init__(self, given: WorkerSetup):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.config, self.stage, self.meta = given.config, STAGES[given.stage], given.meta
        self.normalizer = Normalizer.from_dict(self.meta.normalizer)
        self.classes = self.meta.classes
        self.tensorboard_dir = Path(given.tensorboard_dir)
        self.mlflow = given.mlflow
        self._restored: str | None = None

    def batches(self, epoch: int):
        import ray.train

        cfg = self.stage.section(self.config)
        maker = BatchMaker(self.stage, self.config, self.normalizer, self.classes,
                           max(2, cfg.batch_size // self.world_size))
        # whole blocks, in the new random order the dataset draws every epoch, into the shared batch maker
        blocks = ray.train.get_dataset_shard("train").iter_batches(batch_size=None, batch_format="pyarrow")
        return maker(blocks, epoch_rng(cfg.seed, epoch, self.rank))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        if self._restored is not None:  # the loop has read the restored checkpoint by now
            shutil.rmtree(self._restored, ignore_errors=True)
            self._restored = None

        # stage 2 leaves the decoder unused: DDP must expect unused parameters
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        if self.rank == 0:  # Ray forwards worker output to the driver: one line per epoch, not one per worker
            log.info(epoch_line(metrics, self.stage.section(self.config).epochs))

    def restore(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        self._restored = tempfile.mkdtemp(prefix="rcmae_restore_")
        return Path(checkpoint.to_directory(self._restored))


def _worker(loop_config: dict) -> None:
    # Ray Train gives the worker's root logger a console handler: rcmae's lines go through it (once), and Ray
    # Train's own line per report shows only at --log-level debug
    given: WorkerSetup = loop_config[SETUP]
    logging.getLogger("rcmae").setLevel(given.log_level)
    if given.log_level > logging.DEBUG:
        quiet_train_report_lines()
    session = RaySession(given)
    run_stage(session, session.stage, session.stage.start_model(session.config, session.meta), session.config,
              session.meta)


def train_dataset(config: Config, stage: Stage, features_dir: str | Path):
    """The stage's train rows as a Ray dataset, its blocks in an order seeded by the stage's seed (the pipeline wrote
    clips in a random order, so every block mixes machine IDs; each epoch's batches are drawn from them by the
    epoch's own seeded shuffle); cached in the object store when configured. With the shards' content names and
    the order kept from the read to the split (`data_config`), every worker gets the same rows in the same order
    in every run with the seed."""
    dataset = usable_rows(features_dir, stage.columns(config), "train")
    # its blocks in the files' order when read and cached too (the dataset's own copy of the context, shared by
    # the datasets derived from it): read tasks finish in any order
    dataset.context.execution_options.preserve_order = True
    if config.scale.cache_dataset:
        dataset = dataset.materialize()
    return dataset.randomize_block_order(seed=stage.section(config).seed)


def data_config():
    """Blocks reach the workers in the dataset's order (Ray's default lets a faster read task overtake), so the
    split between workers, dealt to whichever has had fewest rows, is the same in every run."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(execution_options=ExecutionOptions(preserve_order=True))


def _fit(config: Config, stage: Stage, features_dir: Path, out_dir: Path, meta: CheckpointMeta, run_name: str,
         callbacks: list | None = None, finish: Callable[[Path], None] | None = None) -> Path:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from rcmae.distributed.rendezvous import LoopbackTorchConfig

    plan = scaling_plan(config.scale, ray.cluster_resources())
    clips = read_feature_table(features_dir, ("train",), ["machine_type"]).num_rows
    if clips < 2 * plan.num_workers:  # a worker with one clip has no batch (the batch losses need two)
        log.warning(f"[{stage.name}] {clips} train clips: {max(1, clips // 2)} worker(s) instead of {plan.num_workers}")
        plan = plan.with_workers(max(1, clips // 2))
    require_group_feasible(f"{stage.name} (Ray Train)", plan.resources_per_worker, plan.num_workers)
    dataset = train_dataset(config, stage, features_dir)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={SETUP: WorkerSetup(stage.name, config, meta, current_level(),
                                              str(out_dir.resolve() / tracking.FOLDER), tracking.active_mlflow())},
        torch_config=LoopbackTorchConfig(backend=plan.backend),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                     resources_per_worker=plan.resources_per_worker),
        run_config=RunConfig(
            name=run_name, storage_path=shared(out_dir.resolve() / "ray_results"),
            checkpoint_config=CheckpointConfig(num_to_keep=config.scale.keep_checkpoints,
                                               checkpoint_score_attribute="loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=config.scale.max_failures), callbacks=callbacks or []),
        datasets={"train": dataset}, dataset_config=data_config(),
    )
    log.info(f"[{stage.name}] Ray Train: {plan.num_workers} worker(s), {plan.backend}, "
             f"{'GPU' if plan.use_gpu else 'CPU'}, run {shared(out_dir.resolve() / 'ray_results')}/{run_name}")
    result = off_the_main_thread(trainer.fit, f"rcmae {stage.name}")
    if result.checkpoint is None:
        raise RuntimeError(f"{stage.name}: Ray Train finished without a checkpoint ({result.error})")
    with result.checkpoint.as_directory() as folder:
        return setup.publish(folder, out_dir, finish)


def pretrain_ray(config: Config, features_dir: str | Path, out_dir: str | Path, run_name: str = "pretrain",
                 callbacks: list | None = None) -> Path:
    meta = setup.pretrain_start(config.augment, features_dir)
    return _fit(config, PRETRAIN, Path(features_dir), Path(out_dir), meta, run_name, callbacks)


def finetune_ray(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path,
                 run_name: str = "finetune", callbacks: list | None = None) -> Path:
    meta, classes = setup.finetune_start(config, features_dir, pretrained_dir)

    def fit(model_dir: Path) -> None:
        save_detector(model_dir, fit_detector_ray(model_dir, features_dir, classes, config.score, config.scale))

    return _fit(config, FINETUNE, Path(features_dir), Path(out_dir), meta, run_name, callbacks, fit)
