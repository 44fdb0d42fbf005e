"""The score methods, one function each, registered by name in `rcmae.registry.SCORES`. Each maps the encoded
clips of known machines, their machine keys, the classes and the fitted detector to one score per clip
(higher = more anomalous)."""

from __future__ import annotations

import numpy as np

from rcmae.detect.detector import COMBINED_MEMBERS, Detector, Encoded, anomaly_scores, combine, mahalanobis
from rcmae.detect.patches import top_mean


def id_logprob_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """The paper's score: -log p(true machine ID | clip) from the ID head."""
    index = np.array([classes.index(k) for k in keys])
    return -encoded.log_probs[np.arange(len(keys)), index]


def embedding_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """Cosine distance of the clip's embedding to its ID's train centroid."""
    centroids = np.stack([detector.centroids[k] for k in keys])
    return 1.0 - np.sum(encoded.embeddings * centroids, axis=1)


def mahalanobis_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """Squared Mahalanobis distance of the pooled features from the ID's Gaussian."""
    keys_array, scores = np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = mahalanobis(encoded.pooled[rows], detector.gaussians[key])
    return scores


def rhythm_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """Squared Mahalanobis distance of the clip's rhythm (`rcmae.detect.rhythm`) from the ID's Gaussian."""
    keys_array, scores = np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = detector.rhythms[key].score(encoded.rhythm[rows])
    return scores


def patch_maps(encoded: Encoded, keys: list[str], detector: Detector) -> np.ndarray:
    """(N, rows, cols) anomaly maps: each patch's standardised distance from the ID's normal patches of its row."""
    keys_array = np.array(keys)
    maps = np.empty(encoded.patches.shape[:3])
    for key in set(keys):
        rows = keys_array == key
        maps[rows] = detector.patch_models[key].map(encoded.patches[rows])
    return maps


def patch_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """The mean of the clip's highest anomaly-map values (`rcmae.detect.patches`)."""
    return top_mean(patch_maps(encoded, keys, detector))


def combined_score(encoded: Encoded, keys: list[str], classes: list[str], detector: Detector) -> np.ndarray:
    """The largest of the members' standardised log-scores (`rcmae.detect.detector.combine`)."""
    return combine({method: anomaly_scores(method, encoded, keys, classes, detector) for method in COMBINED_MEMBERS},
                   keys, detector)
