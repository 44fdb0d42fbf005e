"""Anomaly scores of a fine-tuned RC-MAE and the detector stored with it.

The scores (`rcmae.detect.scores`, by name in `rcmae.registry.SCORES`), all from one pass of the encoder:
- `mahalanobis`: Mahalanobis distance of the clip's pooled encoder features from a Gaussian fitted to its
  ID's train-normal clips. The Gaussian is a probabilistic PCA: `score.components` principal directions
  with their own variances, one shared variance for the rest, so it is well posed with a few dozen clips
  per ID and small to store however wide the features are.
- `embedding`: cosine distance between the clip's embedding and its ID's train centroid; `knn`: distance to its
  ID's nearest train embeddings (the DCASE 2023-2025 baselines' backend).
- `id_logprob`: the paper's -log p(true class | clip) from the stage-2 head (its classes: machine IDs, or
  attributes, `rcmae.data.classes`).
- `rhythm` and `stats`: distance of the log-mel's band-envelope autocorrelation, or of its band means and
  deviations (the floor's statistics), from the ID's Gaussian of them; `patch`: the anomaly map's top.
- `combined` and `fused` (`rcmae.detect.fusions.FUSIONS`): the members' log-scores, each standardised per ID by
  its held-out train scores, taken at their largest or their mean.
The detector, fitted on train-normal clips only (`rcmae.detect.calibration.fit_detector`), also holds per method and
ID a decision threshold: the `decision_percentile` point of a gamma fitted to the ID's held-out train scores. Each ID
is fitted on its own clips only, so fitting runs per ID in parallel and `Detector.merge` joins them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np
import safetensors.numpy
from sklearn.decomposition import PCA

from rcmae.data.classes import ClipClasses, machines_of
from rcmae.detect.patches import PatchModel
from rcmae.detect.ppca import GAUSSIAN_PARTS
from rcmae.detect.shrunk import ShrunkGaussian
from rcmae.detect.thresholds import ThresholdMethod
from rcmae.errors import DataError
from rcmae.models.checkpoint import (
    CheckpointError,
    DetectorMeta,
)
from rcmae.registry import SCORES
from rcmae.sections import ScoreConfig

MIN_OWN_CLIPS = 3  # fewest train clips for an ID's own Gaussian and threshold; fewer use the type's pooled ones
PROFILES = ("rhythm", "stats")  # the `Encoded` statistics of the log-mel each ID keeps a shrunk Gaussian of


@dataclass
class Encoded:
    pooled: np.ndarray      # (N, pooled_dim) encoder features
    embeddings: np.ndarray  # (N, proj_dim) unit-length projections
    log_probs: np.ndarray   # (N, classes) ID-head log-probabilities, (N, 0) without a head
    rhythm: np.ndarray      # (N, rhythm_dim) envelope autocorrelation of the log-mel (`rcmae.detect.rhythm`)
    patches: np.ndarray     # (N, rows, cols, PATCH_DIMS) projected patch tokens (`rcmae.detect.patches`)
    stats: np.ndarray       # (N, 2 * mels) each normalised band's mean and deviation over time (`rcmae.detect.floor`)

    def select(self, rows: np.ndarray) -> "Encoded":
        """The clips at `rows` (indices or a mask)."""
        return Encoded(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


# 4: profiles with a covariance the type shares; 3 (rcmae 0.3): log-mel statistics, kNN; 2 (0.2): rhythm and
# patch models, calibration; 1 (no "format"): Gaussians. An older detector is refitted (the model is kept).
DETECTOR_FORMAT = 4


def current_detector(meta: DetectorMeta | None) -> bool:
    """Whether a detector's stored meta is of this rcmae's format."""
    return meta is not None and meta.format == DETECTOR_FORMAT


@dataclass
class Detector:
    centroids: dict[str, np.ndarray]             # machine key -> unit-length mean train embedding
    gaussians: dict[str, dict[str, np.ndarray]]  # machine key -> GAUSSIAN_PARTS of its pooled features
    # profile (PROFILES) -> machine key -> shrunk Gaussian of its train clips' values
    profiles: dict[str, dict[str, ShrunkGaussian]] = field(default_factory=lambda: {name: {} for name in PROFILES})
    patch_models: dict[str, PatchModel] = field(default_factory=dict)  # machine key -> its normal patches
    neighbours: dict[str, np.ndarray] = field(default_factory=dict)  # machine key -> its train embeddings (`knn`)
    # method -> machine key -> (mean, std) of held-out train log-scores: what the fusions standardise by
    calibration: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> machine key -> threshold
    few_shot: list[str] = field(default_factory=list)  # IDs scored with their type's pooled covariance
    threshold_methods: dict[str, dict[str, ThresholdMethod]] = field(default_factory=dict)  # method -> key -> how
    knn_k: int = 1  # neighbours the `knn` score averages the distances to
    knn_distance: str = "cosine"  # "cosine" or "euclidean" (between unit-length embeddings)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array view, for a safetensors file."""
        arrays = {f"centroid/{key}": value for key, value in self.centroids.items()}
        for key, gaussian in self.gaussians.items():
            # C order: safetensors writes the buffer as it lies in memory (sklearn's PCA components are F-ordered)
            arrays.update({f"{part}/{key}": np.ascontiguousarray(gaussian[part], dtype=np.float32)
                           for part in GAUSSIAN_PARTS})
        for name, per_key in self.profiles.items():
            for key, gaussian in per_key.items():
                arrays.update({f"{name}_mean/{key}": gaussian.mean.astype(np.float32),
                               f"{name}_inverse/{key}": np.ascontiguousarray(gaussian.inverse, dtype=np.float32)})
        for key, model in self.patch_models.items():
            arrays.update({f"patch_{part}/{key}": value for part, value in model.arrays().items()})
        arrays.update({f"neighbours/{key}": value.astype(np.float32) for key, value in self.neighbours.items()})
        return arrays

    def meta(self) -> DetectorMeta:
        """What meta.json keeps of the detector (its arrays go to detector.safetensors)."""
        return DetectorMeta(DETECTOR_FORMAT, self.thresholds, self.threshold_methods, self.few_shot,
                            {method: {key: list(stats) for key, stats in per_key.items()}
                             for method, per_key in self.calibration.items()}, self.knn_k, self.knn_distance)

    def to_bytes(self) -> bytes:
        return safetensors.numpy.save(self.arrays(), metadata={"meta": json.dumps(dataclasses.asdict(self.meta()))})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Detector":
        arrays = safetensors.numpy.load(data)
        header_size = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + header_size])["__metadata__"]["meta"])
        return cls.from_arrays(arrays, DetectorMeta(**meta))

    @classmethod
    def merge(cls, parts: list["Detector"]) -> "Detector":
        """One detector from detectors of disjoint machine IDs."""
        merged = cls({}, {})
        for part in parts:
            merged.centroids.update(part.centroids)
            merged.gaussians.update(part.gaussians)
            for name in PROFILES:
                merged.profiles[name].update(part.profiles[name])
            merged.patch_models.update(part.patch_models)
            merged.neighbours.update(part.neighbours)
            merged.knn_k, merged.knn_distance = part.knn_k, part.knn_distance
            for mine, theirs in ((merged.calibration, part.calibration), (merged.thresholds, part.thresholds),
                                 (merged.threshold_methods, part.threshold_methods)):
                for method, per_key in theirs.items():
                    mine.setdefault(method, {}).update(per_key)
            merged.few_shot = sorted(merged.few_shot + part.few_shot)
        return merged

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: DetectorMeta) -> "Detector":
        """From `arrays()` and `meta()` as stored."""
        if not current_detector(meta):
            raise CheckpointError("the detector was fitted by an older rcmae (another detector format): run the same "
                                  "`rcmae finetune` (or `rcmae run`) again: it fits the detector anew without "
                                  "retraining")
        keys = sorted(name.split("/", 1)[1] for name in arrays if name.startswith("centroid/"))
        return cls(centroids={key: arrays[f"centroid/{key}"] for key in keys},
                   gaussians={key: {part: arrays[f"{part}/{key}"] for part in GAUSSIAN_PARTS} for key in keys},
                   profiles={name: {key: ShrunkGaussian(arrays[f"{name}_mean/{key}"].astype(np.float64),
                                                        arrays[f"{name}_inverse/{key}"].astype(np.float64))
                                    for key in keys} for name in PROFILES},
                   patch_models={key: PatchModel.from_arrays({part: arrays[f"patch_{part}/{key}"]
                                                              for part in PatchModel.PARTS}) for key in keys},
                   neighbours={key: arrays[f"neighbours/{key}"] for key in keys},
                   calibration={method: {key: (float(stats[0]), float(stats[1])) for key, stats in per_key.items()}
                                for method, per_key in meta.calibration.items()},
                   thresholds=meta.thresholds, few_shot=list(meta.few_shot), threshold_methods=meta.threshold_methods,
                   knn_k=meta.knn_k, knn_distance=meta.knn_distance)


def fit_gaussian(features: np.ndarray, components: int) -> dict[str, np.ndarray]:
    """Probabilistic PCA of one ID's train features (at most n - 2 and d - 1 directions, so that the
    shared variance of the remaining ones is estimated from data)."""
    count, width = features.shape
    if count < 3:
        raise ValueError(f"a Gaussian per machine ID needs at least 3 train clips, got {count}")
    # seeded: for wide inputs sklearn picks a randomized SVD, which would differ run to run
    with np.errstate(invalid="ignore", divide="ignore"):  # identical clips: sklearn's explained ratio is 0 / 0
        pca = PCA(n_components=min(components, count - 2, width - 1), random_state=0).fit(features.astype(np.float64))
    # identical train clips have no spread at all: a floor relative to the features' size keeps every
    # variance positive, so the distances stay finite (and huge off the clips, as they should be)
    floor = 1e-12 * max(float(pca.explained_variance_[0]), float(np.mean(features.astype(np.float64) ** 2))) + 1e-30
    noise = max(float(pca.noise_variance_), floor)
    return dict(mean=pca.mean_, components=pca.components_, variances=np.maximum(pca.explained_variance_, noise),
                noise=np.array([noise]))


def machine_type_of(key: str) -> str:
    return key.split("/", 1)[0]


def profile_mates(encoded: Encoded, keys: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per machine ID and profile (PROFILES): the train values of the other IDs of its machine type, each centred on
    its own ID's mean (IDs of one clip have no spread to give)."""
    centred = {name: centred_by_id(getattr(encoded, name), keys) for name in PROFILES}
    counts = {key: int((keys == key).sum()) for key in set(keys)}
    mates = {}
    for key in set(keys):
        rows = np.array([k != key and counts[k] > 1 and machine_type_of(k) == machine_type_of(key) for k in keys],
                        dtype=bool)
        mates[key] = {name: values[rows] for name, values in centred.items()}
    return mates


def fit_scorer(encoded: Encoded, keys: list[str], config: ScoreConfig,
               mates: dict[str, dict[str, np.ndarray]] | None = None) -> Detector:
    """Centroids, Gaussians, rhythm and patch models per machine ID. An ID with fewer than MIN_OWN_CLIPS train
    clips (a new machine, a target domain) gets its own mean with its machine type's pooled spread: the type's
    clips, each centred on its own ID's mean (or on the type's mean when its ID has a single clip). The profiles'
    covariance is shared by the type: each ID's own spread with `mates`' (`profile_mates`; by default those of the
    other IDs in `encoded`)."""
    keys_array = np.array(keys)
    mates = profile_mates(encoded, keys_array) if mates is None else mates
    detector = Detector({}, {}, knn_k=config.knn_k, knn_distance=config.knn_distance)
    for key in sorted(set(keys)):
        rows = keys_array == key
        mean = encoded.embeddings[rows].mean(axis=0)
        detector.centroids[key] = (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)
        if rows.sum() >= MIN_OWN_CLIPS:
            sample = encoded.select(rows)
            detector.gaussians[key] = fit_gaussian(sample.pooled, config.components)
            for name in PROFILES:
                detector.profiles[name][key] = ShrunkGaussian.fit_shared(getattr(sample, name), mates[key][name])
        else:
            sample = type_sample(encoded, keys_array, key)
            pooled = pooled_gaussian(encoded.pooled, keys_array, machine_type_of(key), config.components)
            detector.gaussians[key] = dict(pooled, mean=encoded.pooled[rows].mean(axis=0))
            detector.few_shot.append(key)
            for name in PROFILES:  # the sample is the type's spread already
                detector.profiles[name][key] = ShrunkGaussian.fit_shared(getattr(sample, name))
        detector.patch_models[key] = PatchModel.fit(sample.patches)
        detector.neighbours[key] = encoded.embeddings[rows].astype(np.float32)
    return detector


def type_sample(encoded: Encoded, keys: np.ndarray, key: str) -> Encoded:
    """The clips of `key`'s machine type with their pooled features, profiles and patches moved to `key`'s mean:
    the spread of the type around the few clips of one ID (embeddings and ID log-probabilities as they are)."""
    of_type = np.array([machine_type_of(k) == machine_type_of(key) for k in keys])
    if of_type.sum() < MIN_OWN_CLIPS:
        raise DataError(f"machine type {machine_type_of(key)!r} has {of_type.sum()} train clip(s) in all: the "
                        f"detector needs at least {MIN_OWN_CLIPS} per type (one ID may hold them all)")
    sample, own = encoded.select(of_type), keys[of_type] == key

    def moved(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(len(values), -1)
        return (centred_by_id(flat, keys[of_type]) + flat[own].mean(axis=0)).reshape(values.shape)

    return dataclasses.replace(sample, pooled=moved(sample.pooled), patches=moved(sample.patches),
                               **{name: moved(getattr(sample, name)) for name in PROFILES})


def pooled_gaussian(pooled: np.ndarray, keys: np.ndarray, machine_type: str, components: int) -> dict:
    """A zero-mean Gaussian of the within-ID spread of one machine type's train features."""
    of_type = np.array([machine_type_of(k) == machine_type for k in keys])
    return fit_gaussian(centred_by_id(pooled[of_type], keys[of_type]), components)


def centred_by_id(features: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Each row minus its ID's mean (minus the mean of all rows when its ID has a single row)."""
    centred = np.empty_like(features)
    for key in set(owners):
        rows = owners == key
        centre = features[rows].mean(axis=0) if rows.sum() > 1 else features.mean(axis=0)
        centred[rows] = features[rows] - centre
    return centred


def anomaly_scores(method: str, encoded: Encoded, keys: list[str], clips: ClipClasses,
                   detector: Detector) -> np.ndarray:
    known = machines_of(clips.classes)
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise DataError(f"machine IDs not seen in training: {unknown}; known: {known}")
    if method not in SCORES:
        raise ValueError(f"unknown score method {method!r}; choose from {sorted(SCORES)}")
    return SCORES[method].load()(encoded, keys, clips, detector)


def check_finite(name: str, values: np.ndarray, keys: list[str], paths: list[str] | None) -> None:
    """Stop, naming the clips and their IDs, when any row of `values` holds NaN or infinity."""
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad.size:
        named = [f"{paths[i] if paths else f'row {i}'} ({keys[i]})" for i in bad[:3]]
        raise DataError(f"{bad.size} train clip(s) give non-finite {name}, e.g. {', '.join(named)}: the model or "
                        f"these clips are broken (a diverged training stage, or clips of NaN/inf samples); "
                        f"retrain with a lower learning rate, or remove the clips")
