"""Anomaly scores of a fine-tuned RC-MAE and the detector stored with it.

Three scores, all from one pass of the encoder:
- `mahalanobis`: Mahalanobis distance of the clip's pooled encoder features from a Gaussian fitted to its
  ID's train-normal clips. The Gaussian is a probabilistic PCA: `score.components` principal directions
  with their own variances, one shared variance for the rest, so it is well posed with a few dozen clips
  per ID and small to store however wide the features are.
- `embedding`: cosine distance between the clip's embedding and its ID's train centroid.
- `id_logprob`: the paper's -log p(true machine ID | clip) from the ID head.
The detector, fitted on train-normal clips only, also holds per method and ID a decision threshold: the
`decision_percentile` point of a gamma fitted to the ID's train scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from rcmae.config import SCORE_METHODS, ScoreConfig
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE

GAUSSIAN_PARTS = ("mean", "components", "variances", "noise")


@dataclass
class Encoded:
    pooled: np.ndarray      # (N, pooled_dim) encoder features
    embeddings: np.ndarray  # (N, proj_dim) unit-length projections
    log_probs: np.ndarray   # (N, classes) ID-head log-probabilities, (N, 0) without a head


@torch.no_grad()
def encode_all(model: RCMAE, specs: np.ndarray, normalizer: Normalizer, batch_size: int = 64,
               device: str | torch.device = "cpu") -> Encoded:
    """Pooled features, embeddings and ID log-probabilities of raw log-mels (N, F, T)."""
    model.eval().to(device)
    pooled_parts, embeddings, log_probs = [], [], []
    for start in range(0, len(specs), batch_size):
        batch = torch.as_tensor(normalizer(specs[start:start + batch_size]), dtype=torch.float32, device=device)
        pooled, z = model.encode(batch)
        pooled_parts.append(pooled.cpu().numpy())
        embeddings.append(F.normalize(z, dim=1).cpu().numpy())
        if model.classifier is not None:
            log_probs.append(F.log_softmax(model.logits(pooled), dim=1).cpu().numpy())
    return Encoded(np.concatenate(pooled_parts), np.concatenate(embeddings),
                   np.concatenate(log_probs) if log_probs else np.zeros((len(specs), 0)))


@dataclass
class Detector:
    centroids: dict[str, np.ndarray]             # machine key -> unit-length mean train embedding
    gaussians: dict[str, dict[str, np.ndarray]]  # machine key -> GAUSSIAN_PARTS of its pooled features
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> machine key -> threshold

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array view, for a safetensors file."""
        arrays = {f"centroid/{key}": value for key, value in self.centroids.items()}
        for key, gaussian in self.gaussians.items():
            arrays.update({f"{part}/{key}": np.asarray(gaussian[part], dtype=np.float32) for part in GAUSSIAN_PARTS})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], thresholds: dict[str, dict[str, float]]) -> "Detector":
        keys = sorted(name.split("/", 1)[1] for name in arrays if name.startswith("centroid/"))
        return cls(centroids={key: arrays[f"centroid/{key}"] for key in keys},
                   gaussians={key: {part: arrays[f"{part}/{key}"] for part in GAUSSIAN_PARTS} for key in keys},
                   thresholds=thresholds)


def fit_gaussian(features: np.ndarray, components: int) -> dict[str, np.ndarray]:
    """Probabilistic PCA of one ID's train features (at most n - 2 and d - 1 directions, so that the
    shared variance of the remaining ones is estimated from data)."""
    count, width = features.shape
    if count < 3:
        raise ValueError(f"a Gaussian per machine ID needs at least 3 train clips, got {count}")
    pca = PCA(n_components=min(components, count - 2, width - 1)).fit(features.astype(np.float64))
    noise = max(float(pca.noise_variance_), 1e-12 * float(pca.explained_variance_[0]) + 1e-30)
    return dict(mean=pca.mean_, components=pca.components_, variances=pca.explained_variance_,
                noise=np.array([noise]))


def mahalanobis(features: np.ndarray, gaussian: dict[str, np.ndarray]) -> np.ndarray:
    """Squared Mahalanobis distance under covariance V diag(variances) V^T + noise (I - V V^T)."""
    centred = features - gaussian["mean"]
    along = centred @ gaussian["components"].T
    noise = float(gaussian["noise"][0])
    return (centred ** 2).sum(axis=1) / noise + (along ** 2 * (1.0 / gaussian["variances"] - 1.0 / noise)).sum(axis=1)


def fit_scorer(encoded: Encoded, keys: list[str], config: ScoreConfig) -> Detector:
    keys_array = np.array(keys)
    centroids, gaussians = {}, {}
    for key in sorted(set(keys)):
        rows = keys_array == key
        mean = encoded.embeddings[rows].mean(axis=0)
        centroids[key] = (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)
        gaussians[key] = fit_gaussian(encoded.pooled[rows], config.components)
    return Detector(centroids, gaussians)


def anomaly_scores(method: str, encoded: Encoded, keys: list[str], classes: list[str],
                   detector: Detector) -> np.ndarray:
    unknown = sorted(set(keys) - set(classes))
    if unknown:
        raise ValueError(f"machine IDs not seen in training: {unknown}; known: {classes}")
    if method == "id_logprob":
        index = np.array([classes.index(k) for k in keys])
        return -encoded.log_probs[np.arange(len(keys)), index]
    if method == "embedding":
        centroids = np.stack([detector.centroids[k] for k in keys])
        return 1.0 - np.sum(encoded.embeddings * centroids, axis=1)
    if method == "mahalanobis":
        keys_array, scores = np.array(keys), np.empty(len(keys))
        for key in set(keys):
            rows = keys_array == key
            scores[rows] = mahalanobis(encoded.pooled[rows], detector.gaussians[key])
        return scores
    raise ValueError(f"unknown score method {method!r}; choose from {SCORE_METHODS}")


def gamma_threshold(scores: np.ndarray, percentile: float) -> float:
    """The `percentile` point of a gamma fitted to train-normal scores (as the DCASE 2020 baseline)."""
    scores = np.asarray(scores, dtype=float)
    shift = min(0.0, float(scores.min())) - 1e-9  # gamma needs positive support
    shape, loc, scale = scipy.stats.gamma.fit(scores - shift)
    return float(scipy.stats.gamma.ppf(percentile, shape, loc=loc, scale=scale) + shift)


def fit_detector(model: RCMAE, specs: np.ndarray, keys: list[str], classes: list[str], normalizer: Normalizer,
                 config: ScoreConfig, device: str | torch.device = "cpu") -> Detector:
    """Per-ID centroids and Gaussians, and per-ID, per-method thresholds, from train-normal clips."""
    encoded = encode_all(model, specs, normalizer, device=device)
    detector = fit_scorer(encoded, keys, config)
    for method in SCORE_METHODS:
        scores = anomaly_scores(method, encoded, keys, classes, detector)
        detector.thresholds[method] = {key: gamma_threshold(scores[np.array(keys) == key], config.decision_percentile)
                                       for key in sorted(set(keys))}
    return detector
