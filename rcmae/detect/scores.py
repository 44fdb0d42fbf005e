"""The score methods, one function each, registered by name in `rcmae.registry.SCORES`. Each maps the encoded
clips of known machines, their machine keys, their stage-2 classes and the fitted detector to one score per clip
(higher = more anomalous)."""

from __future__ import annotations

import numpy as np

from rcmae.data.classes import ClipClasses
from rcmae.detect.detector import Detector, Encoded, anomaly_scores
from rcmae.detect.fusions import FUSIONS, fuse
from rcmae.detect.patches import top_mean
from rcmae.detect.ppca import mahalanobis


def id_logprob_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """The paper's score: -log p(true class | clip) from the stage-2 head (`rcmae.data.classes`)."""
    return -clips.true_log_probs(encoded.log_probs)


def embedding_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """Cosine distance of the clip's embedding to its ID's train centroid."""
    centroids = np.stack([detector.centroids[k] for k in keys])
    return 1.0 - np.sum(encoded.embeddings * centroids, axis=1)


def mahalanobis_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """Squared Mahalanobis distance of the pooled features from the ID's Gaussian."""
    keys_array, scores = np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = mahalanobis(encoded.pooled[rows], detector.gaussians[key])
    return scores


def knn_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """The mean distance of the clip's embedding to its `knn_k` nearest train embeddings of its ID."""
    keys_array, scores = np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        cosine = 1.0 - encoded.embeddings[rows] @ detector.neighbours[key].T.astype(np.float64)
        distances = np.sqrt(np.maximum(2.0 * cosine, 0.0)) if detector.knn_distance == "euclidean" else cosine
        k = min(detector.knn_k, distances.shape[1])
        scores[rows] = np.sort(distances, axis=1)[:, :k].mean(axis=1)
    return scores


def _profile_score(name: str, encoded: Encoded, keys: list[str], detector: Detector) -> np.ndarray:
    """Squared Mahalanobis distance of the clip's `name` profile from the ID's Gaussian of it."""
    keys_array, scores = np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = detector.profiles[name][key].score(getattr(encoded, name)[rows])
    return scores


def rhythm_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """Distance of the clip's rhythm (`rcmae.detect.rhythm`) from the ID's Gaussian of it."""
    return _profile_score("rhythm", encoded, keys, detector)


def stats_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """Distance of the clip's band means and deviations over time (the floor's statistics) from the ID's Gaussian."""
    return _profile_score("stats", encoded, keys, detector)


def patch_maps(encoded: Encoded, keys: list[str], detector: Detector) -> np.ndarray:
    """(N, rows, cols) anomaly maps: each patch's standardised distance from the ID's normal patches of its row."""
    keys_array = np.array(keys)
    maps = np.empty(encoded.patches.shape[:3])
    for key in set(keys):
        rows = keys_array == key
        maps[rows] = detector.patch_models[key].map(encoded.patches[rows])
    return maps


def patch_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """The mean of the clip's highest anomaly-map values (`rcmae.detect.patches`)."""
    return top_mean(patch_maps(encoded, keys, detector))


def _fusion_score(name: str, encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    members = {method: anomaly_scores(method, encoded, keys, clips, detector) for method in FUSIONS[name].members}
    return fuse(name, members, keys, detector)


def combined_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """The largest of mahalanobis' and rhythm's standardised log-scores (`rcmae.detect.fusions.FUSIONS`)."""
    return _fusion_score("combined", encoded, keys, clips, detector)


def fused_score(encoded: Encoded, keys: list[str], clips: ClipClasses, detector: Detector) -> np.ndarray:
    """The largest of the standardised log-scores of stats, mahalanobis and rhythm (`fusions.FUSIONS`)."""
    return _fusion_score("fused", encoded, keys, clips, detector)
