"""What each stage needs before and after its loop, shared by the in-process and the Ray Train drivers:
the statistics (train normaliser, classes), the model to start from, and the final model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from rcmae.config import Config
from rcmae.evaluate.scoring import fit_detector
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE
from rcmae.train.checkpoint import META, WEIGHTS, load_checkpoint, save_checkpoint, save_detector_arrays
from rcmae.train.data import FeatureSet, read_feature_table, stream_train_specs, train_classes

FINAL = "model"


def pretrain_start(config: Config, features_dir: str | Path) -> tuple[RCMAE, dict]:
    """A fresh model and the metadata every stage-1 checkpoint carries (the train normaliser)."""
    variants = read_feature_table(features_dir, ("train",), columns=["augmented"])["augmented"]
    if variants.null_count or min((len(v) for v in variants.to_pylist()), default=0) == 0:
        raise ValueError(f"{features_dir}: stage 1 needs augmented variants for every train clip: "
                         f"run `rcmae augment` (its train clips get --variants K >= 1)")
    normalizer = Normalizer.fit_stream(stream_train_specs(features_dir))
    torch.manual_seed(config.pretrain.seed)
    return RCMAE(model=config.model, features=config.features), {"normalizer": normalizer.to_dict()}


def finetune_start(config: Config, features_dir: str | Path, pretrained_dir: str | Path) -> tuple[RCMAE, dict, list[str]]:
    """Stage 1's weights with a fresh ID head over the train split's machine IDs."""
    pretrained = load_checkpoint(pretrained_dir)
    for section in ("model", "features", "audio"):
        if getattr(pretrained.config, section) != getattr(config, section):
            raise ValueError(f"{pretrained_dir}: its `{section}` config differs from this run's; fine-tune with the "
                             f"config the model was pre-trained with (same --preset/--config)")
    classes = train_classes(features_dir)
    torch.manual_seed(config.finetune.seed)
    model = pretrained.model.with_classifier(len(classes))
    meta = {"normalizer": pretrained.meta["normalizer"], "classes": classes,
            "pretrained_from": str(pretrained_dir)}
    return model, meta, classes


def publish(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a run's last checkpoint to `out_dir/model` (without optimizer state) for the next stage."""
    final = Path(out_dir) / FINAL
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    for name in (WEIGHTS, META):
        shutil.copy2(Path(checkpoint_dir) / name, final / name)
    return final


def attach_detector(model_dir: str | Path, features_dir: str | Path) -> Path:
    """Fit the detector (per-ID Gaussians, thresholds) on the train clips and store it with the model."""
    checkpoint = load_checkpoint(model_dir)
    train = FeatureSet.load(features_dir, splits=("train",), augmented=False)
    detector = fit_detector(checkpoint.model, train.specs, train.keys(), checkpoint.classes,
                            checkpoint.normalizer, checkpoint.config.score)
    save_detector_arrays(model_dir, detector.arrays())
    save_checkpoint(model_dir, checkpoint.model, checkpoint.config,
                    dict(checkpoint.meta, detector={"thresholds": detector.thresholds}))
    return Path(model_dir)
