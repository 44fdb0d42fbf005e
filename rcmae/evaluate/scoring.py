"""Anomaly scores of a fine-tuned RC-MAE and the per-ID decision thresholds stored with it.

Two scores:
- `id_logprob`: the paper's -log p(true machine ID | clip) from the ID head.
- `embedding`: cosine distance between the clip's embedding and its ID's train centroid.
Thresholds: a gamma distribution fitted to each ID's train-normal scores, at `decision_percentile`.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F

from rcmae.config import ScoreConfig
from rcmae.features import Normalizer
from rcmae.models.mae import RCMAE

METHODS = ("embedding", "id_logprob")


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


def fit_centroids(embeddings: np.ndarray, keys: list[str]) -> dict[str, list[float]]:
    centroids = {}
    for key in sorted(set(keys)):
        mean = embeddings[np.array(keys) == key].mean(axis=0)
        centroids[key] = (mean / (np.linalg.norm(mean) + 1e-12)).tolist()
    return centroids


def anomaly_scores(method: str, embeddings: np.ndarray, log_probs: np.ndarray, keys: list[str],
                   classes: list[str], centroids: dict[str, list[float]]) -> np.ndarray:
    unknown = sorted(set(keys) - set(classes))
    if unknown:
        raise ValueError(f"machine IDs not seen in training: {unknown}; known: {classes}")
    if method == "id_logprob":
        index = np.array([classes.index(k) for k in keys])
        return -log_probs[np.arange(len(keys)), index]
    if method == "embedding":
        targets = np.stack([centroids[k] for k in keys])
        return 1.0 - np.sum(embeddings * targets, axis=1)
    raise ValueError(f"unknown score method {method!r}; choose from {METHODS}")


def gamma_threshold(scores: np.ndarray, percentile: float) -> float:
    """The `percentile` point of a gamma fitted to train-normal scores (as the DCASE 2020 baseline)."""
    scores = np.asarray(scores, dtype=float)
    shift = min(0.0, float(scores.min())) - 1e-9  # gamma needs positive support
    shape, loc, scale = scipy.stats.gamma.fit(scores - shift)
    return float(scipy.stats.gamma.ppf(percentile, shape, loc=loc, scale=scale) + shift)


def fit_detector(model: RCMAE, specs: np.ndarray, keys: list[str], classes: list[str], normalizer: Normalizer,
                 config: ScoreConfig, device: str | torch.device = "cpu") -> dict:
    """Centroids and per-ID, per-method thresholds from train-normal clips, to store in the checkpoint."""
    embeddings, log_probs = encode_all(model, specs, normalizer, device=device)
    centroids = fit_centroids(embeddings, keys)
    thresholds: dict[str, dict[str, float]] = {}
    for method in METHODS:
        scores = anomaly_scores(method, embeddings, log_probs, keys, classes, centroids)
        thresholds[method] = {key: gamma_threshold(scores[np.array(keys) == key], config.decision_percentile)
                              for key in sorted(set(keys))}
    return {"centroids": centroids, "thresholds": thresholds}
