"""A Gaussian that stays well posed with few samples: the covariance shrunk towards a scaled identity, scored by
squared Mahalanobis distance. The floor reference, the rhythm score and the patch maps each fit one per machine ID."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHRINKAGE = 0.1  # weight of the scaled identity in the covariance


def shrunk_inverse(centred: np.ndarray, magnitude: float) -> np.ndarray:
    """Inverse of the covariance of centred rows, shrunk towards a scaled identity. Identical rows have no spread:
    a floor relative to the values' `magnitude` (their mean square) keeps it invertible, and distances off them
    huge, as they should be."""
    covariance = centred.T @ centred / max(1, len(centred) - 1)
    scale = max(float(np.trace(covariance)) / len(covariance), 1e-12 * magnitude + 1e-30)
    return np.linalg.inv((1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(len(covariance)))


@dataclass
class ShrunkGaussian:
    mean: np.ndarray     # (d,)
    inverse: np.ndarray  # (d, d) inverse of the shrunk covariance

    @classmethod
    def fit(cls, values: np.ndarray) -> "ShrunkGaussian":
        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        return cls(mean, shrunk_inverse(values - mean, float(np.mean(values ** 2))))

    def score(self, values: np.ndarray) -> np.ndarray:
        centred = np.asarray(values, dtype=np.float64) - self.mean
        return np.einsum("ij,jk,ik->i", centred, self.inverse, centred)
