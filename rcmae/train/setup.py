"""What each stage needs before and after its loop, shared by the in-process and the Ray Train drivers:
the checks and statistics (train normaliser, classes) its checkpoints carry, from which `Stage.start_model`
builds the model to start from wherever the loop runs, and the final model folder. All of it streams the
feature Parquet: memory does not grow with the number of clips."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

from rcmae.config import Config
from rcmae.data.classes import train_classes
from rcmae.data.feature_table import fewest_variants, machine_key, read_feature_table, stream_specs
from rcmae.data.run_folder import lock_owner, written_aside
from rcmae.detect.detector import MIN_OWN_CLIPS
from rcmae.errors import ConfigError, DataError
from rcmae.features import Normalizer
from rcmae.models.checkpoint import META, WEIGHTS, CheckpointMeta, read_meta
from rcmae.sections import AugmentConfig
from rcmae.stores import parent_of, shared

FINAL = "model"
PAPER_CLASSES = 41  # DCASE 2020: 23 development IDs + 18 of the additional training set
log = logging.getLogger(__name__)


def require_finished(features_dir: str | Path) -> None:
    """No stage trains on features whose augmentation is still being written."""
    owner = lock_owner(parent_of(shared(features_dir)))  # a fetched copy: its store folder's lock
    if owner is not None:
        raise DataError(f"{features_dir}: its augmentation has not finished ({owner.get('what')} on host "
                         f"{owner.get('host')}, pid {owner.get('pid')}, since {owner.get('started')})")


def check_detector_data(features_dir: str | Path) -> list[str]:
    """Before any training: every machine type needs MIN_OWN_CLIPS train clips for the detector fitted after
    stage 2. Returns the few-shot IDs (fewer clips than that: scored with their type's pooled covariance)."""
    counts = read_feature_table(features_dir, ("train",), ["machine_type", "machine_id"]).group_by(
        ["machine_type", "machine_id"]).aggregate([([], "count_all")]).to_pylist()
    per_type: dict[str, int] = {}
    for row in counts:
        per_type[row["machine_type"]] = per_type.get(row["machine_type"], 0) + row["count_all"]
    short = sorted(t for t, n in per_type.items() if n < MIN_OWN_CLIPS)
    if short:
        raise DataError(f"{features_dir}: machine type(s) {short} have fewer than {MIN_OWN_CLIPS} usable train clips "
                         f"in all: the detector cannot be fitted; add train clips or leave those types out")
    few = sorted(machine_key(r["machine_type"], r["machine_id"]) for r in counts if r["count_all"] < MIN_OWN_CLIPS)
    if few:
        log.warning("few-shot machine IDs (under %d train clips), to be scored with their type's pooled "
                    "covariance: %s", MIN_OWN_CLIPS, ", ".join(few))
    return few


def pretrain_start(augment: AugmentConfig, features_dir: str | Path) -> CheckpointMeta:
    """The metadata every stage-1 checkpoint carries (the train normaliser), once the features are checked
    (finished, enough clips, variants for every train clip unless `augment` applies per step)."""
    require_finished(features_dir)
    check_detector_data(features_dir)
    if not augment.per_step and fewest_variants(features_dir) == 0:
        raise DataError(f"{features_dir}: stage 1 needs augmented variants for every train clip: "
                         f"run `rcmae augment` (its train clips get --variants K >= 1)")
    return CheckpointMeta(normalizer=Normalizer.fit_stream(stream_specs(features_dir)).to_dict())


def finetune_start(config: Config, features_dir: str | Path,
                   pretrained_dir: str | Path) -> tuple[CheckpointMeta, list[str]]:
    """The metadata every stage-2 checkpoint carries (stage 1's normaliser and folder, the train split's classes,
    which the fresh head classifies: machine IDs or attributes, `finetune.classes`) and those classes."""
    pretrained = read_meta(pretrained_dir)
    pretrained_config = Config.from_dict(pretrained.config)
    for section in ("model", "features", "audio"):
        if getattr(pretrained_config, section) != getattr(config, section):
            raise ConfigError(f"{pretrained_dir}: its `{section}` config differs from this run's; fine-tune with the "
                             f"config the model was pre-trained with (same --preset/--config)")
    require_finished(features_dir)
    check_detector_data(features_dir)
    class_by, classes = train_classes(features_dir, config.finetune.classes)
    log.info("stage 2 classifies %d %s: %s", len(classes), "attribute classes" if class_by == "attributes"
             else "machine IDs", ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else ""))
    one_per_type = len(classes) == len({key.split("/")[0] for key in classes})
    if class_by == "id" and one_per_type:
        log.warning("stage 2 has one machine ID per type to classify (nothing to tell apart within a type): "
                    "its file names carry no attributes to classify instead (finetune.classes=%s)",
                    config.finetune.classes)
    if config.preset == "paper" and len(classes) != PAPER_CLASSES:
        log.warning("the paper's stage 2 classifies over %d machine IDs (DCASE 2020 dev + additional training "
                    "set); these features hold %d: index a root holding both dev_data/ and eval_data/<type>/train",
                    PAPER_CLASSES, len(classes))
    meta = CheckpointMeta(normalizer=pretrained.normalizer, classes=classes,
                          pretrained_from=shared(Path(pretrained_dir).resolve()))
    return meta, classes


def publish(checkpoint_dir: str | Path, out_dir: str | Path, finish: Callable[[Path], None] | None = None) -> Path:
    """`out_dir/model` for the next stage: a run's last checkpoint (without optimizer state) and what `finish`
    adds to that folder (stage 2: the fitted detector), written aside and renamed into place whole, so that an
    interrupted or failed fit leaves no model that looks finished."""
    final = Path(out_dir) / FINAL
    with written_aside(final) as staging:
        for name in (WEIGHTS, META):
            shutil.copy2(Path(checkpoint_dir) / name, staging / name)
        if finish is not None:
            finish(staging)
    return final
