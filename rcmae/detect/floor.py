"""The floor a learned detector has to beat: per machine ID, a Gaussian on two statistics of each clip, the
mean and the standard deviation of every log-mel band over time, scored by Mahalanobis distance with
shrinkage towards a scaled identity. It needs no training, fits in milliseconds, and on machine sounds it
is a strong reference (a fault that adds sound moves the means, one that adds variation the deviations);
what a deep model adds is what it scores above this."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHRINKAGE = 0.1  # weight of the scaled identity in each ID's covariance: well posed with few clips


def clip_statistics(specs: np.ndarray) -> np.ndarray:
    """(N, F, T) log-mels -> (N, 2F): each band's mean over time, then its standard deviation."""
    specs = np.asarray(specs, dtype=np.float64)
    return np.concatenate([specs.mean(axis=2), specs.std(axis=2)], axis=1)


@dataclass
class FloorGaussian:
    mean: np.ndarray     # (2F,)
    inverse: np.ndarray  # (2F, 2F) inverse of the shrunk covariance

    @classmethod
    def fit(cls, statistics: np.ndarray) -> "FloorGaussian":
        mean = statistics.mean(axis=0)
        centred = statistics - mean
        covariance = centred.T @ centred / max(1, len(statistics) - 1)
        scale = np.trace(covariance) / len(covariance)
        # identical clips have no spread: the identity's floor keeps the covariance invertible
        scale = max(scale, 1e-12 * float(np.mean(statistics ** 2)) + 1e-30)
        shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(len(covariance))
        return cls(mean, np.linalg.inv(shrunk))

    def score(self, statistics: np.ndarray) -> np.ndarray:
        centred = statistics - self.mean
        return np.einsum("ij,jk,ik->i", centred, self.inverse, centred)


def fit_floor(specs: np.ndarray, keys: list[str]) -> dict[str, FloorGaussian]:
    """One Gaussian per machine ID from its train clips' log-mels."""
    statistics, keys_array = clip_statistics(specs), np.array(keys)
    return {key: FloorGaussian.fit(statistics[keys_array == key]) for key in sorted(set(keys))}


def floor_scores(gaussians: dict[str, FloorGaussian], specs: np.ndarray, keys: list[str]) -> np.ndarray:
    statistics, keys_array, scores = clip_statistics(specs), np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = gaussians[key].score(statistics[rows])
    return scores
