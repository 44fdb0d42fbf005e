"""Checkpoint folders: `model.safetensors` (weights), `meta.json` (config, stage, epoch, classes,
normaliser, detector thresholds), `detector.safetensors` (the fitted detector's arrays, final models only),
optional `optimizer.pt` (optimizer + schedule state, loaded with `weights_only=True`). Nothing loaded here
can unpickle arbitrary objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rcmae.config import Config
from rcmae.errors import RcmaeError
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE

WEIGHTS, META, OPTIMIZER, DETECTOR = "model.safetensors", "meta.json", "optimizer.pt", "detector.safetensors"


class CheckpointError(RcmaeError):
    """A checkpoint folder is missing or incomplete."""


@dataclass
class Checkpoint:
    model: RCMAE
    config: Config
    meta: dict = field(default_factory=dict)
    folder: Path | None = None

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.meta["normalizer"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))


def save_checkpoint(folder: str | Path, model: torch.nn.Module, config: Config, meta: dict,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / META).write_text(json.dumps(dict(meta, config=config.to_dict()), indent=1))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None}, folder / OPTIMIZER)
    return folder


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no {META})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: damaged ({error})") from None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a training checkpoint folder cannot be resumed from (missing or unreadable parts), or None."""
    folder = Path(folder)
    try:
        read_meta(folder)
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            weights.keys()
        torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)
    except Exception as error:  # any damage means "do not trust"; the reason is reported
        return f"{type(error).__name__}: {error}"
    return None


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    folder = Path(folder)
    meta = read_meta(folder)
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: checkpoint has no {WEIGHTS}")
    config = Config.from_dict(meta.pop("config"))
    model = RCMAE(model=config.model, features=config.features, num_classes=len(meta.get("classes", [])))
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS), device="cpu"))
    except Exception as error:  # a truncated or foreign file: one line naming it, not a traceback
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model {META} describes: the weights are damaged "
                              f"or from another model, or {META}'s config was edited "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    return Checkpoint(model=model.to(device), config=config, meta=meta, folder=folder)


def save_detector_arrays(folder: str | Path, arrays: dict[str, np.ndarray]) -> None:
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(Path(folder) / DETECTOR))


def load_detector_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    path = Path(folder) / DETECTOR
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {DETECTOR}: pass the model folder written by `rcmae finetune`")
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"{path}: damaged ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None


def load_training_state(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler=None) -> None:
    path = Path(folder) / OPTIMIZER
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {OPTIMIZER} to resume from")
    state = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
