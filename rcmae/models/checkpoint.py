"""Checkpoint folders: `model.safetensors` (weights), `meta.json` (config, stage, epoch, classes,
normaliser, detector thresholds), `detector.safetensors` (the fitted detector's arrays, final models only),
optional `optimizer.pt` (optimizer + schedule state, loaded with `weights_only=True`). Nothing loaded here
can unpickle arbitrary objects.

meta.json records the sha256 of both safetensors files and of what training fixed in meta.json itself (the features
and model config, the normaliser, the machine IDs); each is checked when read, so a damaged or edited model is a
`CheckpointError` naming the file, never wrong scores. Values are checked too: a non-finite weight, normaliser,
threshold or detector array refuses the model.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
from safetensors.torch import load, save

from rcmae.config import Config
from rcmae.errors import RcmaeError
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE
from rcmae.sections import AudioConfig, AugmentConfig, FeatureConfig, ScoreConfig
from rcmae.stores import fetched

WEIGHTS, META, OPTIMIZER, DETECTOR = "model.safetensors", "meta.json", "optimizer.pt", "detector.safetensors"
TRAINED = "trained"  # the checksum of meta.json's features and model config, normaliser and machine IDs


class CheckpointError(RcmaeError):
    """A checkpoint folder is missing or incomplete."""


@dataclass
class DetectorMeta:
    """What meta.json keeps of a final model's fitted detector (its arrays: detector.safetensors)."""

    format: int = 1  # the detector format of the rcmae that fitted it (1: from before formats were recorded)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> machine key -> threshold
    threshold_methods: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> key -> how it was found
    few_shot: list[str] = field(default_factory=list)  # IDs scored with their type's pooled covariance
    calibration: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method -> key -> [mean, std]
    knn_k: int = 1  # neighbours the `knn` score averages the distances to
    knn_distance: str = "cosine"  # its distance between unit-length embeddings: "cosine" or "euclidean"

    @classmethod
    def from_json(cls, data: dict, path: Path | str) -> "DetectorMeta":
        unknown = sorted(set(data) - {f.name for f in fields(cls)}) if isinstance(data, dict) else ["(not a mapping)"]
        if unknown:
            raise CheckpointError(f"{path}: not rcmae detector metadata (unknown keys {', '.join(unknown)})")
        meta = cls(**data)
        for method, per_key in meta.thresholds.items():
            for key, value in per_key.items():
                if not finite_number(value):
                    raise CheckpointError(f"{path}: damaged: the {method} threshold of {key} is {value!r}, not a "
                                          f"finite number: refit with `rcmae finetune --force`")
        for method, per_key in meta.calibration.items():
            for key, stats in per_key.items():
                if not (isinstance(stats, list) and len(stats) == 2 and all(map(finite_number, stats))
                        and stats[1] > 0):
                    raise CheckpointError(f"{path}: damaged: the {method} calibration of {key} is {stats!r}, not "
                                          f"[mean, positive spread]: refit with `rcmae finetune --force`")
        return meta


def finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class CheckpointMeta:
    """What a checkpoint's meta.json holds."""

    normalizer: dict                   # the train normaliser (`Normalizer.to_dict`)
    config: dict = field(default_factory=dict)  # the full config that made it (`Config.to_dict`); set on saving
    stage: str | None = None           # "pretrain" or "finetune"
    epoch: int | None = None           # epochs trained
    history: list[dict] = field(default_factory=list)  # each epoch's metrics
    classes: list[str] = field(default_factory=list)   # stage 2: the classes its head classifies (`data.classes`)
    pretrained_from: str | None = None  # stage 2: the stage-1 model folder it started from (a URI in a store)
    detector: DetectorMeta | None = None  # final stage-2 models: `Detector.meta()`
    checksums: dict[str, str] = field(default_factory=dict)  # WEIGHTS, DETECTOR, TRAINED -> sha256 (hex)

    @classmethod
    def from_json(cls, data: dict, path: Path) -> "CheckpointMeta":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "normalizer" not in data:
            why = f"unknown keys {', '.join(unknown)}" if unknown else "no normaliser"
            raise CheckpointError(f"{path}: not rcmae checkpoint metadata ({why})")
        detector = data.get("detector")
        meta = cls(**dict(data, detector=None if detector is None else DetectorMeta.from_json(detector, path)))
        recorded = meta.checksums.get(TRAINED)
        if recorded is not None and recorded != meta.trained_digest():
            raise CheckpointError(f"{path}: edited after training: its features or model config, normaliser or "
                                  f"machine IDs differ from what the model was trained with (sha256 differs from "
                                  f"the one recorded): restore the file or retrain")
        meta.check_normalizer(path)
        return meta

    def trained_digest(self) -> str:
        """sha256 of what training fixed in meta.json: no later step may change it."""
        fixed = [self.config.get("features"), self.config.get("model"), self.normalizer, self.classes]
        return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()

    def check_normalizer(self, path: Path) -> None:
        mels = (self.config.get("features") or {}).get("n_mels")
        for part in ("mean", "std"):
            values = self.normalizer.get(part) if isinstance(self.normalizer, dict) else None
            if (not isinstance(values, list) or (mels is not None and len(values) != mels)
                    or not all(map(finite_number, values)) or (part == "std" and min(values, default=0) <= 0)):
                raise CheckpointError(f"{path}: damaged: the normaliser's {part} is not {mels} finite numbers"
                                      f"{' above 0' if part == 'std' else ''}: restore the file or retrain")

    def to_json(self) -> dict:
        return asdict(self)

    def made_with(self) -> Config:
        """The whole config that made the model, typed (sections and fields added since at their defaults): for the
        drivers. Every other module reads the sections it uses (below)."""
        return Config.from_dict(self.config)

    @cached_property
    def _made_with(self) -> Config:
        return self.made_with()

    @property
    def preset(self) -> str:
        return self._made_with.preset

    @property
    def audio(self) -> AudioConfig:
        return self._made_with.audio

    @property
    def features(self) -> FeatureConfig:
        return self._made_with.features

    @property
    def augment(self) -> AugmentConfig:
        return self._made_with.augment

    @property
    def score(self) -> ScoreConfig:
        return self._made_with.score

    def thresholds(self, method: str) -> dict[str, float]:
        """The decision thresholds of `method` per machine ID (final stage-2 models)."""
        if not self.detector:
            raise CheckpointError("the model has no fitted detector: pass the model folder written by `rcmae finetune`")
        return self.detector.thresholds[method]


@dataclass
class Checkpoint:
    model: RCMAE
    config: Config
    meta: CheckpointMeta
    folder: Path | None = None

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.meta.normalizer)

    @property
    def audio(self) -> AudioConfig:
        return self.config.audio

    @property
    def features(self) -> FeatureConfig:
        return self.config.features

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)


def save_checkpoint(folder: str | Path, model: torch.nn.Module, config: Config, meta: CheckpointMeta,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (folder / WEIGHTS).write_bytes(save(state))  # bytes: safetensors' own file calls take UTF-8 paths only
    meta = replace(meta, config=config.to_dict())
    write_meta(folder, replace(meta, checksums={WEIGHTS: sha256_of(folder / WEIGHTS), TRAINED: meta.trained_digest()}))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None}, folder / OPTIMIZER)
    return folder


def read_meta(folder: str | Path) -> CheckpointMeta:
    path = Path(folder) / META
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no {META})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: damaged ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: damaged (not a JSON object)")
    return CheckpointMeta.from_json(data, path)


def write_meta(folder: str | Path, meta: CheckpointMeta) -> None:
    (Path(folder) / META).write_text(json.dumps(meta.to_json(), indent=1))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights in `folder`, read as bytes (safetensors' own file calls take UTF-8 paths only)."""
    return load((folder / WEIGHTS).read_bytes())


def verify_file(folder: Path, name: str, meta: CheckpointMeta) -> None:
    """Stop when `name`'s sha256 differs from the one meta.json recorded (folders from before rcmae recorded
    them pass)."""
    recorded = meta.checksums.get(name)
    if recorded is not None and sha256_of(folder / name) != recorded:
        raise CheckpointError(f"{folder / name}: damaged or replaced: its sha256 differs from the one {META} "
                              f"recorded (copied from another model folder, or cut short?): restore it or retrain")


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why a training checkpoint folder cannot be resumed from (missing or unreadable parts), or None."""
    folder = Path(folder)
    try:
        verify_file(folder, WEIGHTS, read_meta(folder))
        read_weights(folder)
        torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)
    except Exception as error:  # any damage means "do not trust"; the reason is reported
        return f"{type(error).__name__}: {error}"
    return None


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """The model in `folder` (a store URI: fetched first, so a worker on any node can load it)."""
    folder = fetched(folder)
    meta = read_meta(folder)
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: checkpoint has no {WEIGHTS}")
    verify_file(folder, WEIGHTS, meta)
    config = meta.made_with()
    model = RCMAE(model=config.model, features=config.features, num_classes=len(meta.classes))
    try:
        weights = read_weights(folder)
        model.load_state_dict(weights)
    except Exception as error:  # a truncated or foreign file: one line naming it, not a traceback
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model {META} describes: the weights are damaged "
                              f"or from another model, or {META}'s config was edited "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    broken = sorted(name for name, tensor in weights.items() if not torch.isfinite(tensor).all())
    if broken:
        raise CheckpointError(f"{folder / WEIGHTS}: damaged: non-finite values in {', '.join(broken[:3])}"
                              f"{f' and {len(broken) - 3} more' if len(broken) > 3 else ''}: restore it or retrain")
    return Checkpoint(model=model.to(device), config=config, meta=meta, folder=folder)


def save_detector_arrays(folder: str | Path, arrays: dict[str, np.ndarray]) -> None:
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    (Path(folder) / DETECTOR).write_bytes(safetensors.numpy.save(contiguous))


def load_detector_arrays(folder: str | Path, meta: CheckpointMeta) -> dict[str, np.ndarray]:
    path = Path(folder) / DETECTOR
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {DETECTOR}: pass the model folder written by `rcmae finetune`")
    verify_file(Path(folder), DETECTOR, meta)
    try:
        arrays = safetensors.numpy.load(path.read_bytes())
    except Exception as error:
        raise CheckpointError(f"{path}: damaged ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    broken = sorted(name for name, values in arrays.items() if not np.isfinite(values).all())
    if broken:
        raise CheckpointError(f"{path}: damaged: non-finite values in {', '.join(broken[:3])}"
                              f"{f' and {len(broken) - 3} more' if len(broken) > 3 else ''}: refit with "
                              f"`rcmae finetune --force`")
    return arrays


def load_training_state(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler=None) -> None:
    path = Path(folder) / OPTIMIZER
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {OPTIMIZER} to resume from")
    state = torch.load(path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
