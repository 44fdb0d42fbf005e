"""What the detector learns from held-out train clips: each score's calibration (the spread of an ID's held-out
train log-scores, which the fusions standardise by: `rcmae.detect.fusions`) and each method's per-ID decision
threshold (`fit_detector`: the detector's models, then both). Held-out scores, because in-sample ones understate how
far a new normal clip lies, and say nothing at all for `knn`."""

from __future__ import annotations

import numpy as np

from rcmae.data.classes import ClipClasses
from rcmae.detect.detector import (
    MIN_OWN_CLIPS,
    Detector,
    Encoded,
    anomaly_scores,
    check_finite,
    fit_scorer,
    machine_type_of,
    profile_mates,
    type_sample,
)
from rcmae.detect.fusions import FUSIONS, fuse, log_scale
from rcmae.detect.thresholds import gamma_threshold, warn_fallbacks
from rcmae.registry import SCORES
from rcmae.sections import ScoreConfig

HELD_OUT_FOLDS = 5  # folds of an ID's train clips for its held-out scores (calibration and thresholds)


def held_out_scores(encoded: Encoded, key: str, clips: ClipClasses, config: ScoreConfig,
                    methods: tuple[str, ...], mates: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Each method's scores of one ID's train clips, each clip scored by a detector fitted without its fold (and
    with the ID's `mates`, as the whole detector is; None when the ID has too few clips to leave a fold out)."""
    count = len(encoded.pooled)
    folds = min(HELD_OUT_FOLDS, count // MIN_OWN_CLIPS)
    if folds < 2:
        return None
    fold = np.arange(count) % folds
    scores = {method: np.empty(count) for method in methods}
    for part in range(folds):
        fitted = fit_scorer(encoded.select(fold != part), [key] * int((fold != part).sum()), config, {key: mates})
        held = encoded.select(fold == part)
        for method in methods:
            scores[method][fold == part] = anomaly_scores(method, held, [key] * len(held.pooled),
                                                          clips.select(fold == part), fitted)
    return scores


def calibrate(detector: Detector, method: str, key: str, scores: np.ndarray) -> None:
    """Keep the mean and spread of an ID's log-scores under `method` (the scale the fusions standardise by)."""
    logs = log_scale(method, scores)
    detector.calibration.setdefault(method, {})[key] = (float(logs.mean()), float(max(logs.std(), 1e-6)))


def fit_detector(encoded: Encoded, keys: list[str], clips: ClipClasses, config: ScoreConfig,
                 paths: list[str] | None = None) -> Detector:
    """Per-ID centroids, Gaussians, profiles, patch models and neighbours, and per-ID, per-method thresholds, from
    train-normal clips (`paths` name them in errors). Thresholds and the fusions' calibration come from held-out
    scores (each fold scored by a detector fitted without it): in-sample ones understate how far a new normal clip
    lies, and say nothing at all for `knn`."""
    for name, values in (("encoder features", encoded.pooled), ("embeddings", encoded.embeddings),
                         ("ID log-probabilities", encoded.log_probs), ("rhythm", encoded.rhythm),
                         ("patch tokens", encoded.patches), ("log-mel statistics", encoded.stats)):
        check_finite(name, values, keys, paths)
    keys_array = np.array(keys)
    mates = profile_mates(encoded, keys_array)
    detector = fit_scorer(encoded, keys, config, mates)
    types = np.array([machine_type_of(k) for k in keys])
    samples = {key: (encoded.select(keys_array == key) if key not in detector.few_shot
                     else type_sample(encoded, keys_array, key)) for key in sorted(set(keys))}
    # a few-shot ID's sample holds its type's clips, each taken as one of the ID's
    sample_clips = {key: (clips.select(keys_array == key) if key not in detector.few_shot
                          else ClipClasses.as_machine(clips.classes, key, len(sample.pooled)))
                    for key, sample in samples.items()}
    singles = tuple(method for method in SCORES if method not in FUSIONS)
    held_out = {}
    for key, sample in samples.items():
        held_out[key] = (held_out_scores(sample, key, sample_clips[key], config, singles, mates[key])
                         if key not in detector.few_shot else None)
        for method in singles:
            calibrate(detector, method, key, held_out[key][method] if held_out[key] is not None else
                      anomaly_scores(method, sample, [key] * len(sample.pooled), sample_clips[key], detector))
    for method in SCORES:
        scores = anomaly_scores(method, encoded, keys, clips, detector)
        check_finite(f"{method} scores", scores, keys, paths)
        detector.thresholds[method], detector.threshold_methods[method] = {}, {}
        for key, sample in samples.items():
            if held_out[key] is not None:
                values = (fuse(method, held_out[key], [key] * len(sample.pooled), detector) if method in FUSIONS
                          else held_out[key][method])
            elif key in detector.few_shot and SCORES[method].few_shot_threshold_from_type:
                values = scores[types == machine_type_of(key)]  # the type's clips, each against its own ID
            elif key in detector.few_shot:  # the type's spread around this ID's few clips, scored as this ID
                values = anomaly_scores(method, sample, [key] * len(sample.pooled), sample_clips[key], detector)
            else:
                values = scores[keys_array == key]
            threshold = gamma_threshold(values, config.decision_percentile)
            detector.thresholds[method][key] = threshold.value
            detector.threshold_methods[method][key] = threshold.method
    warn_fallbacks(detector.threshold_methods)
    return detector
