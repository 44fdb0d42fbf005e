"""What each stage needs before and after its loop, shared by the in-process and the Ray Train drivers:
the inputs (train features, normaliser, classes), the model to start from, and the final model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rcmae.config import Config
from rcmae.evaluate.scoring import fit_detector
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE
from rcmae.train.checkpoint import load_checkpoint, save_checkpoint
from rcmae.train.data import FeatureSet, stage2_arrays

FINAL = "model"


def load_train_features(features_dir: str | Path) -> FeatureSet:
    return FeatureSet.load(features_dir, splits=("train",))


def pretrain_start(config: Config, train: FeatureSet) -> tuple[RCMAE, dict]:
    """A fresh model and the metadata every stage-1 checkpoint carries (the train normaliser)."""
    if train.augmented is None:
        raise ValueError("stage 1 needs augmented variants for every train clip: run `rcmae augment` first")
    normalizer = Normalizer.fit(train.specs)
    return RCMAE(model=config.model, features=config.features), {"normalizer": normalizer.to_dict()}


def finetune_start(config: Config, train: FeatureSet, pretrained_dir: str | Path) -> tuple[RCMAE, dict, list[str]]:
    """Stage 1's weights with a fresh ID head over the train split's machine IDs."""
    pretrained = load_checkpoint(pretrained_dir)
    for section in ("model", "features", "audio"):
        if getattr(pretrained.config, section) != getattr(config, section):
            raise ValueError(f"{pretrained_dir}: its `{section}` config differs from this run's; fine-tune with the "
                             f"config the model was pre-trained with (same --preset/--config)")
    classes = sorted(set(train.keys()))
    model = pretrained.model.with_classifier(len(classes))
    meta = {"normalizer": pretrained.meta["normalizer"], "classes": classes,
            "pretrained_from": str(pretrained_dir)}
    return model, meta, classes


def stage2_data(config: Config, train: FeatureSet, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return stage2_arrays(train, classes, config.finetune.use_augmented)


def publish(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a run's last checkpoint to `out_dir/model` (without optimizer state) for the next stage."""
    final = Path(out_dir) / FINAL
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    for name in ("model.safetensors", "meta.json"):
        shutil.copy2(Path(checkpoint_dir) / name, final / name)
    return final


def attach_detector(model_dir: str | Path, train: FeatureSet) -> Path:
    """Fit score centroids and per-ID thresholds on the train clips and store them with the model."""
    checkpoint = load_checkpoint(model_dir)
    detector = fit_detector(checkpoint.model, train.specs, train.keys(), checkpoint.classes,
                            checkpoint.normalizer, checkpoint.config.score)
    save_checkpoint(model_dir, checkpoint.model, checkpoint.config, dict(checkpoint.meta, detector=detector))
    return Path(model_dir)
