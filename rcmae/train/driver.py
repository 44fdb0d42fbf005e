"""Run a training stage where the config says: in-process (scale.num_workers == 0) or on Ray Train."""

from __future__ import annotations

from pathlib import Path

from rcmae.config import Config


def pretrain(config: Config, features_dir: str | Path, out_dir: str | Path) -> Path:
    if config.scale.num_workers == 0:
        from rcmae.train.local import pretrain_local

        return pretrain_local(config, features_dir, out_dir)
    from rcmae.cluster import ensure_ray
    from rcmae.train.distributed import pretrain_ray

    ensure_ray()
    return pretrain_ray(config, features_dir, out_dir)


def finetune(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path) -> Path:
    if config.scale.num_workers == 0:
        from rcmae.train.local import finetune_local

        return finetune_local(config, features_dir, pretrained_dir, out_dir)
    from rcmae.cluster import ensure_ray
    from rcmae.train.distributed import finetune_ray

    ensure_ray()
    return finetune_ray(config, features_dir, pretrained_dir, out_dir)
