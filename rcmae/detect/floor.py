"""The floor a learned detector has to beat: per machine ID, a Gaussian on two statistics of each clip, the
mean and the standard deviation of every log-mel band over time, scored by Mahalanobis distance with
shrinkage towards a scaled identity. It needs no training, fits in milliseconds, and on machine sounds it
is a strong reference (a fault that adds sound moves the means, one that adds variation the deviations);
what a deep model adds is what it scores above this."""

from __future__ import annotations

import numpy as np

from rcmae.detect.shrunk import ShrunkGaussian


def clip_statistics(specs: np.ndarray) -> np.ndarray:
    """(N, F, T) log-mels -> (N, 2F): each band's mean over time, then its standard deviation."""
    specs = np.asarray(specs, dtype=np.float64)
    return np.concatenate([specs.mean(axis=2), specs.std(axis=2)], axis=1)


def fit_floor(specs: np.ndarray, keys: list[str]) -> dict[str, ShrunkGaussian]:
    """One Gaussian per machine ID from its train clips' log-mels."""
    statistics, keys_array = clip_statistics(specs), np.array(keys)
    return {key: ShrunkGaussian.fit(statistics[keys_array == key]) for key in sorted(set(keys))}


def floor_scores(gaussians: dict[str, ShrunkGaussian], specs: np.ndarray, keys: list[str]) -> np.ndarray:
    statistics, keys_array, scores = clip_statistics(specs), np.array(keys), np.empty(len(keys))
    for key in set(keys):
        rows = keys_array == key
        scores[rows] = gaussians[key].score(statistics[rows])
    return scores
