"""The two training stages as values: what each reads from the feature table, how it turns rows into a batch,
the objective it optimises and the model it starts from. The in-process runner and the Ray Train workers use the
same `Stage`, so both paths build the same batches and the same start model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch

from rcmae.augment.specaugment import masked_view
from rcmae.config import Config
from rcmae.data.classes import CLASS_COLUMNS, ClipClasses
from rcmae.data.feature_table import pick_variants, specs_from_column
from rcmae.errors import ConfigError
from rcmae.features import Normalizer
from rcmae.models.checkpoint import CheckpointMeta, load_checkpoint
from rcmae.models.mae import RCMAE
from rcmae.models.objectives import FinetuneObjective, PretrainObjective
from rcmae.registry import AUGMENTERS
from rcmae.sections import FinetuneConfig, PretrainConfig

StageName = Literal["pretrain", "finetune"]
PATHS = "paths"  # the batch's clip paths (not a tensor): named when a batch gives a non-finite loss


@dataclass(frozen=True)
class Stage(ABC):
    name: StageName
    depends_on: tuple[str, ...]  # the config sections its model depends on (a change means another model)

    def section(self, config: Config) -> PretrainConfig | FinetuneConfig:
        """The stage's own config section (epochs, batch size, learning rate, seed, ...)."""
        return getattr(config, self.name)

    @abstractmethod
    def columns(self, config: Config) -> list[str]:
        """The feature-table columns the stage's batches are made from."""

    @abstractmethod
    def collate(self, rows: pa.Table, rng: np.random.Generator, config: Config, normalizer: Normalizer,
                classes: list[str]) -> dict[str, np.ndarray | list[str]]:
        """Feature-table rows -> the stage's batch (normalised log-mels, labels) and the rows' `PATHS`."""

    @abstractmethod
    def objective(self, model: RCMAE, config: Config) -> torch.nn.Module:
        """The module around `model` that the session wraps for DDP and the loop optimises."""

    @abstractmethod
    def step(self, objective: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The objective's terms on one batch."""

    @abstractmethod
    def start_model(self, config: Config, meta: CheckpointMeta) -> RCMAE:
        """The model the stage trains from, seeded by its section's seed (`meta`: what its checkpoints carry)."""


@dataclass(frozen=True)
class Pretrain(Stage):
    """Stage 1: each clip paired with one of its augmented variants, drawn afresh each epoch, or (an augmenter
    applied per step, the ablation's masking) with itself under masks drawn for the batch, applied on the
    training device."""

    def columns(self, config: Config) -> list[str]:
        return ["path", "features"] + ([] if config.augment.per_step else ["augmented"])

    def collate(self, rows, rng, config, normalizer, classes):
        shape = (config.features.n_mels, config.features.n_frames)
        original = normalizer(specs_from_column(rows["features"], *shape)).astype(np.float32)
        if config.augment.per_step:
            per_step = AUGMENTERS[config.augment.augmenter].load()(config.augment.options)
            return {"original": original, **per_step.draw(rng, original.shape), PATHS: rows["path"].to_pylist()}
        return {"original": original,
                "augmented": normalizer(pick_variants(rows["augmented"], rng, *shape)).astype(np.float32),
                PATHS: rows["path"].to_pylist()}

    def objective(self, model, config):
        return PretrainObjective(model, config.pretrain)

    def step(self, objective, batch):
        augmented = batch["augmented"] if "augmented" in batch else masked_view(batch)
        return objective(batch["original"], augmented)

    def start_model(self, config, meta):
        torch.manual_seed(config.pretrain.seed)
        return RCMAE(model=config.model, features=config.features)


@dataclass(frozen=True)
class Finetune(Stage):
    """Stage 2: each clip labelled with its class, its machine ID or its attributes (`rcmae.data.classes`), and,
    with `finetune.use_augmented`, one of its variants with the same label."""

    def columns(self, config: Config) -> list[str]:
        if config.finetune.use_augmented and config.augment.per_step:
            raise ConfigError(f"finetune.use_augmented needs written variants; augmenter {config.augment.augmenter!r} "
                              f"writes none (it is applied per stage-1 batch)")
        return ["path", "features", *CLASS_COLUMNS] + (["augmented"] if config.finetune.use_augmented else [])

    def collate(self, rows, rng, config, normalizer, classes):
        shape = (config.features.n_mels, config.features.n_frames)
        specs = specs_from_column(rows["features"], *shape)
        index = {key: i for i, key in enumerate(classes)}
        labels = np.array([index[key] for key in ClipClasses.of_table(rows, classes).of_clips], dtype=np.int64)
        if config.finetune.use_augmented:
            specs = np.concatenate([specs, pick_variants(rows["augmented"], rng, *shape)])
            labels = np.concatenate([labels, labels])
        return {"specs": normalizer(specs).astype(np.float32), "labels": labels, PATHS: rows["path"].to_pylist()}

    def objective(self, model, config):
        return FinetuneObjective(model, config.finetune)

    def step(self, objective, batch):
        return objective(batch["specs"], batch["labels"])

    def start_model(self, config, meta):
        """Stage 1's weights (`meta.pretrained_from`) with a fresh ID head over `meta.classes`."""
        model = load_checkpoint(meta.pretrained_from).model
        torch.manual_seed(config.finetune.seed)
        return model.with_classifier(len(meta.classes))


PRETRAIN = Pretrain("pretrain", ("audio", "features", "model", "pretrain"))
FINETUNE = Finetune("finetune", ("audio", "features", "model", "pretrain", "finetune", "score"))
STAGES: dict[str, Stage] = {stage.name: stage for stage in (PRETRAIN, FINETUNE)}
