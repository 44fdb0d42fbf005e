"""The per-machine Gaussian of pooled encoder features (`mahalanobis`): a probabilistic PCA, `score.components`
principal directions with their own variances and one shared variance for the rest, scored by squared Mahalanobis
distance. Fitted in `rcmae.detect.detector.fit_gaussian`; numpy only, so the edge runtime scores with it too."""

from __future__ import annotations

import numpy as np

GAUSSIAN_PARTS = ("mean", "components", "variances", "noise")


def mahalanobis(features: np.ndarray, gaussian: dict[str, np.ndarray]) -> np.ndarray:
    """Squared Mahalanobis distance under covariance V diag(variances) V^T + noise (I - V V^T)."""
    centred = features - gaussian["mean"]
    along = centred @ gaussian["components"].T
    noise = float(gaussian["noise"][0])
    return (centred ** 2).sum(axis=1) / noise + (along ** 2 * (1.0 / gaussian["variances"] - 1.0 / noise)).sum(axis=1)
