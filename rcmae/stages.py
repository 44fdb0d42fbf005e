"""Run a stage where the config says: in-process (scale.num_workers == 0) or on Ray (Train for the training
stages, Data for batch inference). A training stage holds its output folder (one writer at a time)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from rcmae.config import Config
from rcmae.data.run_folder import owned


def pretrain(config: Config, features_dir: str | Path, out_dir: str | Path) -> Path:
    with owned(out_dir, "rcmae pretrain"):
        if config.scale.num_workers == 0:
            from rcmae.train.local import pretrain_local

            return pretrain_local(config, features_dir, out_dir)
        from rcmae.distributed.runtime import ensure_ray
        from rcmae.distributed.train import pretrain_ray

        ensure_ray()
        return pretrain_ray(config, features_dir, out_dir)


def finetune(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path) -> Path:
    with owned(out_dir, "rcmae finetune"):
        if config.scale.num_workers == 0:
            from rcmae.train.local import finetune_local

            return finetune_local(config, features_dir, pretrained_dir, out_dir)
        from rcmae.distributed.runtime import ensure_ray
        from rcmae.distributed.train import finetune_ray

        ensure_ray()
        return finetune_ray(config, features_dir, pretrained_dir, out_dir)


def score_test_split(config: Config, model_dir: str | Path, features_dir: str | Path) -> pa.Table:
    """Metadata and `score_<method>` of every usable test clip in the feature Parquet."""
    if config.scale.num_workers == 0:
        from rcmae.detect.apply import score_rows
        from rcmae.evaluate.test_split import feature_test_split

        return score_rows(model_dir, feature_test_split(features_dir))
    from rcmae.distributed.inference import score_features_ray
    from rcmae.distributed.runtime import ensure_ray

    ensure_ray()
    return score_features_ray(model_dir, features_dir, config)
