"""Run a training stage where the config says: in-process (scale.num_workers == 0) or on Ray Train."""

from __future__ import annotations

from pathlib import Path

from rcmae.config import Config


def pretrain(config: Config, features_dir: str | Path, out_dir: str | Path, verbose: bool = True) -> Path:
    from rcmae.train.local import pretrain_local

    return pretrain_local(config, features_dir, out_dir, verbose=verbose)


def finetune(config: Config, features_dir: str | Path, pretrained_dir: str | Path, out_dir: str | Path,
             verbose: bool = True) -> Path:
    from rcmae.train.local import finetune_local

    return finetune_local(config, features_dir, pretrained_dir, out_dir, verbose=verbose)
