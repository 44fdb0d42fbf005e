"""Both stages under Ray Train: a `TorchTrainer` per stage, DDP over `num_workers` (gloo on CPU, NCCL on
GPU), the feature Parquet streamed with Ray Data (`get_dataset_shard` + `iter_batches`), a checkpoint
reported with its metrics every epoch, the best N kept, and `FailureConfig` restarts that resume from the
last checkpoint. Running again with the same run folder resumes instead of restarting.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from rcmae.config import Config, ScaleConfig
from rcmae.features import Normalizer
from rcmae.train import stages
from rcmae.train.checkpoint import WEIGHTS
from rcmae.train.data import machine_key
from rcmae.train.loops import finetune_loop, pretrain_loop

FAULT_ENV = "RCMAE_INJECT_FAULT"  # "MARKER_FILE:EPOCH": one worker raises once after EPOCH (chaos drills, tests)


def scaling_plan(scale: ScaleConfig, resources: dict) -> dict:
    """Workers and their resources from the cluster: one GPU each when there are GPUs, else fractional
    CPUs so Ray Data's readers still find a core on small machines."""
    gpus = int(resources.get("GPU", 0))
    use_gpu = bool(gpus) if scale.use_gpu is None else scale.use_gpu
    if use_gpu and not gpus:
        raise ValueError("scale.use_gpu is true but the Ray cluster has no GPU")
    cpus = float(resources.get("CPU", 1))
    workers = scale.num_workers if scale.num_workers is not None else (gpus if use_gpu else max(1, min(2, int(cpus))))
    per_worker = {"CPU": scale.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    return dict(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker,
                backend="nccl" if use_gpu else "gloo")


class RaySession:
    """The `Session` of a Ray Train worker."""

    def __init__(self, loop_config: dict):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.config = Config.from_dict(loop_config["config"])
        self.stage = loop_config["stage"]
        self.normalizer = Normalizer.from_dict(loop_config["normalizer"])
        self.classes = loop_config.get("classes", [])
        self.fault = loop_config.get("fault")
        self._restored: str | None = None

    def batches(self, epoch: int):
        import ray.train

        cfg = getattr(self.config, self.stage)
        per_worker = max(2, cfg.batch_size // self.world_size)
        rng = np.random.default_rng([cfg.seed, epoch, self.rank])
        shard = ray.train.get_dataset_shard("train")
        shape = (self.config.features.n_mels, self.config.features.n_frames)
        for batch in shard.iter_batches(batch_size=per_worker, batch_format="numpy",
                                        local_shuffle_buffer_size=4 * per_worker, local_shuffle_seed=int(rng.integers(2**31))):
            if len(batch["features"]) < 2:
                continue
            yield self._collate(batch, shape, rng)

    def _collate(self, batch: dict, shape: tuple[int, int], rng: np.random.Generator) -> dict:
        specs = np.stack(batch["features"]).reshape(-1, *shape)
        variants = [np.stack(v) for v in batch["augmented"]]
        if self.stage == "pretrain":
            picked = np.stack([v[rng.integers(len(v))] for v in variants]).reshape(-1, *shape)
            return {"original": self.normalizer(specs).astype(np.float32),
                    "augmented": self.normalizer(picked).astype(np.float32)}
        labels = np.array([self.classes.index(machine_key(t, i))
                           for t, i in zip(batch["machine_type"], batch["machine_id"])])
        if self.config.finetune.use_augmented:  # each clip plus one of its variants, same label
            picked = np.stack([v[rng.integers(len(v))] for v in variants]).reshape(-1, *shape)
            specs, labels = np.concatenate([specs, picked]), np.concatenate([labels, labels])
        return {"specs": self.normalizer(specs).astype(np.float32), "labels": labels.astype(np.int64)}

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        # stage 1 leaves the ID head unused, stage 2 the decoder: DDP must expect unused parameters
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        self._maybe_fail(metrics["epoch"])

    def _maybe_fail(self, epoch: int) -> None:
        if not self.fault or self.rank != self.world_size - 1:
            return
        marker, _, at_epoch = self.fault.rpartition(":")
        if epoch == int(at_epoch) and not os.path.exists(marker):
            Path(marker).write_text(f"worker {self.rank} failed after epoch {epoch}\n")
            raise RuntimeError(f"injected fault after epoch {epoch} ({FAULT_ENV})")

    def restore(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        self._restored = tempfile.mkdtemp(prefix="rcmae_restore_")
        return Path(checkpoint.to_directory(self._restored))


def _worker(loop_config: dict) -> None:
    from rcmae.models.mae import RCMAE

    session = RaySession(loop_config)
    config = session.config
    torch.manual_seed(config.pretrain.seed)
    model = RCMAE(model=config.model, features=config.features)
    if session.stage == "pretrain":
        pretrain_loop(session, model, config, loop_config["meta"])
    else:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(os.path.join(loop_config["pretrained"], WEIGHTS)))
        torch.manual_seed(config.finetune.seed)
        model.with_classifier(len(session.classes))
        finetune_loop(session, model, config, loop_config["meta"])


def _fit(config: Config, stage: str, features_dir: Path, out_dir: Path, loop_config: dict, run_name: str,
         callbacks: list | None = None):
    import ray
    import ray.data
    from ray.data.expressions import col
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    plan = scaling_plan(config.scale, ray.cluster_resources())
    columns = ["features", "augmented", "machine_type", "machine_id"]
    # small read tasks: on a 2-core node the train workers already hold most of the CPUs
    dataset = ray.data.read_parquet(str(features_dir), columns=columns + ["error", "split"],
                                    ray_remote_args={"num_cpus": 0.25})
    dataset = dataset.filter(expr=col("error").is_null() & (col("split") == "train")).select_columns(columns)
    if config.scale.cache_dataset:
        dataset = dataset.materialize()
    fault = os.environ.get(FAULT_ENV)
    trainer = TorchTrainer(
        _worker,
        train_loop_config=dict(loop_config, config=config.to_dict(), stage=stage, fault=fault),
        torch_config=TorchConfig(backend=plan["backend"]),
        scaling_config=ScalingConfig(num_workers=plan["num_workers"], use_gpu=plan["use_gpu"],
                                     resources_per_worker=plan["resources_per_worker"]),
        run_config=RunConfig(
            name=run_name, storage_path=str(out_dir.resolve() / "ray_results"),
            checkpoint_config=CheckpointConfig(num_to_keep=config.scale.keep_checkpoints,
                                               checkpoint_score_attribute="loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=config.scale.max_failures), callbacks=callbacks or []),
        datasets={"train": dataset},
    )
    print(f"[{stage}] Ray Train: {plan['num_workers']} worker(s), {plan['backend']}, "
          f"{'GPU' if plan['use_gpu'] else 'CPU'}, run {out_dir / 'ray_results' / run_name}", flush=True)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage}: Ray Train finished without a checkpoint ({result.error})")
    with result.checkpoint.as_directory() as folder:
        return stages.publish(folder, out_dir)


def pretrain_ray(config: Config, features_dir: str | Path, out_dir: str | Path, run_name: str = "pretrain",
                 callbacks: list | None = None) -> Path:
    _, meta = stages.pretrain_start(config, features_dir)
    return _fit(config, "pretrain", Path(features_dir), Path(out_dir),
                dict(meta=meta, normalizer=meta["normalizer"]), run_name, callbacks)


def finetune_ray(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path,
                 run_name: str = "finetune", callbacks: list | None = None) -> Path:
    _, meta, classes = stages.finetune_start(config, features_dir, pretrained_dir)
    model_dir = _fit(config, "finetune", Path(features_dir), Path(out_dir),
                     dict(meta=meta, normalizer=meta["normalizer"], classes=classes,
                          pretrained=str(Path(pretrained_dir).resolve())), run_name, callbacks)
    return stages.attach_detector(model_dir, features_dir)
