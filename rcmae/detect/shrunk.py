"""A Gaussian that stays well posed with few samples: the covariance shrunk towards a scaled identity, scored by
squared Mahalanobis distance. The floor reference and the patch maps each fit one per machine ID with a fixed
shrinkage (`fit`); the detector's log-mel profiles (`stats`, `rhythm`) fit each ID's mean with a covariance shared by
its machine type and shrunk as Ledoit and Wolf's rule says (`fit_shared`)."""

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

    @classmethod
    def fit_shared(cls, values: np.ndarray, mates: np.ndarray | None = None) -> "ShrunkGaussian":
        """`values`' mean, with the covariance of their spread and of `mates` (rows of other machines of the same
        type, each centred on its own machine's mean): machines of one design vary alike, and several machines'
        clips estimate that variation better than one's. Shrunk towards a scaled identity by the Ledoit-Wolf
        estimate of the best weight, which falls as the clips grow in number."""
        from sklearn.covariance import ledoit_wolf  # here: the edge runtime scores these without scikit-learn

        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        spread = values - mean
        if mates is not None and len(mates):
            spread = np.concatenate([spread, np.asarray(mates, dtype=np.float64)])
        covariance, _ = ledoit_wolf(spread, assume_centered=True)
        # identical rows have no spread: a floor relative to the values' size keeps the covariance invertible
        floor = 1e-12 * float(np.mean(values ** 2)) + 1e-30
        return cls(mean, np.linalg.inv(covariance + floor * np.eye(len(covariance))))

    def score(self, values: np.ndarray) -> np.ndarray:
        centred = np.asarray(values, dtype=np.float64) - self.mean
        return np.einsum("ij,jk,ik->i", centred, self.inverse, centred)
