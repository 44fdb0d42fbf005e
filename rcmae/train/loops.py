"""Per-worker training loops for stage 1 and stage 2.

A loop sees the world through a `Session` (in-process: `LocalSession`; under Ray Train: `RaySession`),
so the same function runs on a laptop and on every worker of a `TorchTrainer`. Each epoch ends with
a checkpoint and its metrics reported together; a restarted loop resumes after the last checkpoint.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import defaultdict
from contextlib import closing, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
import torch

from rcmae.config import Config
from rcmae.errors import DataError
from rcmae.models.checkpoint import CheckpointMeta, load_training_state, read_meta, read_weights, save_checkpoint
from rcmae.models.mae import RCMAE
from rcmae.tracking import MlflowTarget, Scalars, write_epoch
from rcmae.train.stage import PATHS, Stage


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device
    tensorboard_dir: Path  # where rank 0 writes the stage's TensorBoard event files
    mlflow: MlflowTarget | None  # the MLflow run rank 0 logs every epoch to, if any

    def batches(self, epoch: int) -> Iterable[dict[str, np.ndarray | torch.Tensor]]: ...

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called once the loop has read `restore()`'s folder, which may then be removed."""

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None: ...

    def restore(self) -> Path | None:
        """The checkpoint to resume from, or None."""


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Reseed at every epoch, so a run resumed from a checkpoint draws the same masks as one never stopped."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def lr_factor(schedule: str, warmup_epochs: int, epochs: int) -> Callable[[int], float]:
    """The learning rate's factor per epoch: 1 throughout ('constant'), or a linear warm-up then a cosine decay."""
    if schedule == "constant":
        return lambda epoch: 1.0

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); plain fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_device(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def run_stage(session: Session, stage: Stage, model: RCMAE, config: Config, meta: CheckpointMeta) -> list[dict]:
    """The epoch loop of either stage: optimise the stage's objective around `model` (the session wraps it for
    DDP), log each term, checkpoint the model every epoch, resume."""
    cfg = stage.section(config)
    objective = stage.objective(model, config).to(session.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, cfg.warmup_epochs, cfg.epochs))
    start_epoch, history = 0, []
    resume_from = session.restore()
    if resume_from is not None:
        resumed = read_meta(resume_from)
        if resumed.stage == stage.name:
            model.load_state_dict(read_weights(Path(resume_from)))
            load_training_state(resume_from, optimizer, scheduler)
            start_epoch, history = resumed.epoch, resumed.history
    trained = session.prepare(objective)
    with closing(Scalars(session.tensorboard_dir if session.rank == 0 else None, session.mlflow)) as events:
        for epoch in range(start_epoch, cfg.epochs):
            metrics = _train_epoch(session, stage, cfg, trained, optimizer, scheduler, epoch)
            history.append(metrics)
            write_epoch(events, metrics)
            _report_epoch(session, model, config, replace(meta, stage=stage.name, epoch=epoch + 1, history=history),
                          optimizer, scheduler, metrics)
    return history


def _train_epoch(session: Session, stage: Stage, cfg, trained: torch.nn.Module, optimizer, scheduler,
                 epoch: int) -> dict:
    """One epoch over the session's batches: the mean of each term, the learning rate and the throughput."""
    started, sums, count = time.time(), defaultdict(float), 0
    seed_epoch(cfg.seed, epoch, session.rank)
    trained.train()
    samples = 0
    for step_index, batch in enumerate(session.batches(epoch)):
        paths = batch.pop(PATHS)
        batch = to_device(batch, session.device)
        samples += len(paths)
        with autocast(session.device):
            terms = stage.step(trained, batch)
        if not torch.isfinite(terms["loss"].detach()):  # stop before the step: the last checkpoint stays good
            raise DataError(non_finite_loss(stage.name, epoch, step_index, terms, paths))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip)
        optimizer.step()
        for name, value in terms.items():
            sums[name] += float(value.detach())
        count += 1
    if count == 0:
        raise DataError(f"{stage.name}: epoch {epoch + 1} had no batches (too few clips for the batch size?)")
    scheduler.step()
    metrics = {name: total / count for name, total in sums.items()}
    metrics.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=time.time() - started,
                   stage=stage.name, samples_per_second=samples * session.world_size / (time.time() - started))
    return metrics


def non_finite_loss(stage: str, epoch: int, step: int, terms: dict[str, torch.Tensor], paths: list[str]) -> str:
    values = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in terms.items())
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (f"{stage}: the loss is not finite at epoch {epoch + 1}, step {step + 1} ({values}); batch clips: {shown}. "
            f"Training stopped; the last checkpoint is kept. Lower the learning rate ({stage}.lr) or check "
            f"these clips")


def epoch_line(metrics: dict, epochs: int) -> str:
    """One progress line: losses, throughput (all workers) and the time the stage has left at this pace."""
    terms = " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                     if isinstance(v, float) and k not in ("seconds", "lr", "samples_per_second"))
    left = (epochs - metrics["epoch"]) * metrics["seconds"]
    return (f"[{metrics['stage']}] epoch {metrics['epoch']}/{epochs} {terms} ({metrics['seconds']:.1f} s, "
            f"{metrics['samples_per_second']:.0f} samples/s, ~{left:.0f} s left)")


def _report_epoch(session, model, config, meta, optimizer, scheduler, metrics) -> None:
    if session.rank != 0:
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, model, config, meta, optimizer, scheduler)
        session.report(metrics, Path(folder))
