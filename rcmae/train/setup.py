"""What each stage needs before and after its loop, shared by the in-process and the Ray Train drivers:
the statistics (train normaliser, classes), the model to start from, and the final model folder. All of
it streams the feature Parquet: memory does not grow with the number of clips."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from rcmae.config import Config
from rcmae.data.feature_table import fewest_variants, stream_specs, train_classes
from rcmae.features import Normalizer
from rcmae.models.checkpoint import META, WEIGHTS, load_checkpoint
from rcmae.models.mae import RCMAE

FINAL = "model"
PAPER_CLASSES = 41  # DCASE 2020: 23 development IDs + 18 of the additional training set
log = logging.getLogger(__name__)


def pretrain_start(config: Config, features_dir: str | Path) -> tuple[RCMAE, dict]:
    """A fresh model and the metadata every stage-1 checkpoint carries (the train normaliser)."""
    if fewest_variants(features_dir) == 0:
        raise ValueError(f"{features_dir}: stage 1 needs augmented variants for every train clip: "
                         f"run `rcmae augment` (its train clips get --variants K >= 1)")
    normalizer = Normalizer.fit_stream(stream_specs(features_dir))
    torch.manual_seed(config.pretrain.seed)
    return RCMAE(model=config.model, features=config.features), {"normalizer": normalizer.to_dict()}


def finetune_start(config: Config, features_dir: str | Path,
                   pretrained_dir: str | Path) -> tuple[RCMAE, dict, list[str]]:
    """Stage 1's weights with a fresh ID head over the train split's machine IDs."""
    pretrained = load_checkpoint(pretrained_dir)
    for section in ("model", "features", "audio"):
        if getattr(pretrained.config, section) != getattr(config, section):
            raise ValueError(f"{pretrained_dir}: its `{section}` config differs from this run's; fine-tune with the "
                             f"config the model was pre-trained with (same --preset/--config)")
    classes = train_classes(features_dir)
    if config.preset == "paper" and len(classes) != PAPER_CLASSES:
        log.warning("the paper's stage 2 classifies over %d machine IDs (DCASE 2020 dev + additional training "
                    "set); these features hold %d: index a root holding both dev_data/ and eval_data/<type>/train",
                    PAPER_CLASSES, len(classes))
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
