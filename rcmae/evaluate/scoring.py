"""Anomaly scores of a fine-tuned RC-MAE and the detector stored with it.

Three scores, all from one pass of the encoder:
- `mahalanobis`: Mahalanobis distance of the clip's (unit-length) embedding from a Gaussian fitted to its
  ID's train-normal embeddings (Ledoit-Wolf shrunk covariance, so a few dozen clips per ID suffice).
- `embedding`: cosine distance between the clip's embedding and its ID's train centroid.
- `id_logprob`: the paper's -log p(true machine ID | clip) from the ID head.
The detector, fitted on train-normal clips only: per ID the embedding mean and precision matrix, and per
method and ID a decision threshold, the `decision_percentile` point of a gamma fitted to the train scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf

from rcmae.config import SCORE_METHODS, ScoreConfig
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE


@torch.no_grad()
def encode_all(model: RCMAE, specs: np.ndarray, normalizer: Normalizer, batch_size: int = 64,
               device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(normalised embeddings z, ID-head log-probabilities or empty) for raw log-mels (N, F, T)."""
    model.eval().to(device)
    embeddings, log_probs = [], []
    for start in range(0, len(specs), batch_size):
        batch = torch.as_tensor(normalizer(specs[start:start + batch_size]), dtype=torch.float32, device=device)
        pooled, z = model.encode(batch)
        embeddings.append(F.normalize(z, dim=1).cpu().numpy())
        if model.classifier is not None:
            log_probs.append(F.log_softmax(model.logits(pooled), dim=1).cpu().numpy())
    return np.concatenate(embeddings), (np.concatenate(log_probs) if log_probs else np.zeros((len(specs), 0)))


@dataclass
class Detector:
    means: dict[str, np.ndarray]       # machine key -> mean train-normal embedding
    precisions: dict[str, np.ndarray]  # machine key -> inverse of its shrunk covariance
    thresholds: dict[str, dict[str, float]]  # method -> machine key -> decision threshold

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array view, for a safetensors file."""
        return {**{f"mean/{k}": v for k, v in self.means.items()},
                **{f"precision/{k}": v for k, v in self.precisions.items()}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], thresholds: dict[str, dict[str, float]]) -> "Detector":
        pick = lambda kind: {name.split("/", 1)[1]: np.asarray(v) for name, v in arrays.items()
                             if name.startswith(kind + "/")}
        return cls(means=pick("mean"), precisions=pick("precision"), thresholds=thresholds)


def fit_gaussians(embeddings: np.ndarray, keys: list[str]) -> tuple[dict, dict]:
    """Per machine key: mean embedding and Ledoit-Wolf precision matrix."""
    means, precisions = {}, {}
    keys = np.array(keys)
    for key in sorted(set(keys)):
        estimate = LedoitWolf().fit(embeddings[keys == key].astype(np.float64))
        means[key] = estimate.location_.astype(np.float32)
        precisions[key] = estimate.precision_.astype(np.float32)
    return means, precisions


def anomaly_scores(method: str, embeddings: np.ndarray, log_probs: np.ndarray, keys: list[str],
                   classes: list[str], detector: Detector) -> np.ndarray:
    unknown = sorted(set(keys) - set(classes))
    if unknown:
        raise ValueError(f"machine IDs not seen in training: {unknown}; known: {classes}")
    if method == "id_logprob":
        index = np.array([classes.index(k) for k in keys])
        return -log_probs[np.arange(len(keys)), index]
    if method == "embedding":
        centroids = np.stack([detector.means[k] for k in keys])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        return 1.0 - np.sum(embeddings * centroids, axis=1)
    if method == "mahalanobis":
        keys_array, scores = np.array(keys), np.empty(len(keys))
        for key in set(keys):
            rows = keys_array == key
            centred = embeddings[rows] - detector.means[key]
            scores[rows] = np.einsum("ni,ij,nj->n", centred, detector.precisions[key], centred)
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
    """Per-ID Gaussians and per-ID, per-method thresholds from train-normal clips."""
    embeddings, log_probs = encode_all(model, specs, normalizer, device=device)
    detector = Detector(*fit_gaussians(embeddings, keys), thresholds={})
    for method in SCORE_METHODS:
        scores = anomaly_scores(method, embeddings, log_probs, keys, classes, detector)
        detector.thresholds[method] = {key: gamma_threshold(scores[np.array(keys) == key], config.decision_percentile)
                                       for key in sorted(set(keys))}
    return detector
