"""The detector's files in a fine-tuned model folder: its arrays in detector.safetensors, its thresholds and
calibration in meta.json (with the sha256 of the arrays), and the checks a loaded detector passes before it scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rcmae.data.classes import machines_of
from rcmae.detect.detector import Detector, Encoded
from rcmae.models.checkpoint import (
    DETECTOR,
    META,
    CheckpointError,
    load_detector_arrays,
    read_meta,
    save_detector_arrays,
    sha256_of,
    write_meta,
)
from rcmae.registry import SCORES


def load_detector(model_dir: str | Path) -> Detector:
    """The detector stored with a fine-tuned model (arrays in detector.safetensors, thresholds in meta.json)."""
    meta = read_meta(model_dir)
    if meta.detector is None:
        raise CheckpointError(f"{model_dir}: the model has no fitted detector: pass the model folder written by "
                              f"`rcmae finetune`")
    try:
        detector = Detector.from_arrays(load_detector_arrays(model_dir, meta), meta.detector)
    except KeyError as error:
        raise CheckpointError(f"{Path(model_dir) / DETECTOR}: damaged: no array {error}: refit with `rcmae finetune "
                              f"--force`") from None
    machines = set(machines_of(meta.classes))
    if set(detector.centroids) != machines:
        raise CheckpointError(f"{Path(model_dir) / DETECTOR}: not this model's detector: it holds "
                              f"{len(detector.centroids)} machine IDs, {META} names {len(machines)} others (files "
                              f"copied between model folders?): refit it with `rcmae finetune --force`")
    missing = sorted(f"{method} {key}" for method in SCORES for key in machines
                     if key not in detector.thresholds.get(method, {}))
    if missing:
        raise CheckpointError(f"{Path(model_dir) / META}: decision thresholds missing for {', '.join(missing[:4])}"
                              + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                              + " (was it edited?): refit with `rcmae finetune --force`")
    return detector


def check_fits(detector: Detector, probe: Encoded, path: Path) -> None:
    """Stop when an array of the detector has another shape than the model's outputs (`probe`: one clip encoded)
    give it: a detector fitted on another model, or meta.json's features or model config edited since."""
    pooled, projected, rhythm, stats = (probe.pooled.shape[1], probe.embeddings.shape[1], probe.rhythm.shape[1],
                                        probe.stats.shape[1])
    rows, _, dims = probe.patches.shape[1:]
    expected = {"centroid": (projected,), "mean": (pooled,), "components": (None, pooled), "variances": (None,),
                "noise": (1,), "rhythm_mean": (rhythm,), "rhythm_inverse": (rhythm, rhythm), "stats_mean": (stats,),
                "stats_inverse": (stats, stats), "patch_mean": (rows, dims), "patch_inverse": (rows, dims, dims),
                "patch_log_mean": (rows,), "patch_log_std": (rows,), "neighbours": (None, projected)}
    for name, values in detector.arrays().items():
        shape = expected[name.split("/", 1)[0]]
        if len(values.shape) != len(shape) or any(want not in (None, got) for want, got in zip(shape, values.shape)):
            raise CheckpointError(f"{path}: {name} has shape {tuple(values.shape)}, the model's outputs need "
                                  f"{tuple('any' if d is None else d for d in shape)}: the detector is from another "
                                  f"model, or {META}'s config was edited: refit with `rcmae finetune --force`")


def save_detector(model_dir: str | Path, detector: Detector) -> None:
    save_detector_arrays(model_dir, detector.arrays())
    meta = read_meta(model_dir)
    checksums = dict(meta.checksums, **{DETECTOR: sha256_of(Path(model_dir) / DETECTOR)})
    write_meta(model_dir, dataclasses.replace(meta, detector=detector.meta(), checksums=checksums))
