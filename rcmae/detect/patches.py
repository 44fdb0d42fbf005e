"""Where in a clip the sound departs from its machine's normal: one value per patch of the (frequency x time) grid.

Each patch's encoder token (from the whole, unmasked clip) is reduced by a fixed random projection to
PATCH_DIMS values (the same for every model of a width: a clip's patch summary needs no fitted state, so it can be
stored with the clip's other encodings and fitted on later). Per machine ID and frequency row, a Gaussian of the
train clips' patches at that row (over all their time positions: a normal machine sounds alike at any time) gives
each patch a squared Mahalanobis distance; its log, standardised by the row's train patches, is the patch's
value in the anomaly map. The `patch` score of a clip is the mean of its TOP_SHARE highest values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rcmae.detect.shrunk import shrunk_inverse

PATCH_DIMS = 32     # projected size of a patch token
TOP_SHARE = 0.05    # share of patches whose mean is the clip's patch score (at least one)


def projection(width: int) -> np.ndarray:
    """The fixed (width, PATCH_DIMS) projection of patch tokens (seeded: the same for every model of this width)."""
    return np.random.default_rng(0).standard_normal((width, PATCH_DIMS)) / np.sqrt(PATCH_DIMS)


def project_tokens(tokens: np.ndarray) -> np.ndarray:
    """(N, patches, width) tokens in grid order -> (N, patches, PATCH_DIMS)."""
    return (np.asarray(tokens, dtype=np.float64) @ projection(tokens.shape[-1])).astype(np.float32)


@dataclass
class PatchModel:
    """One machine ID's normal patches, per frequency row."""

    mean: np.ndarray      # (rows, PATCH_DIMS)
    inverse: np.ndarray   # (rows, PATCH_DIMS, PATCH_DIMS) inverse of each row's shrunk covariance
    log_mean: np.ndarray  # (rows,) mean of the train patches' log distances
    log_std: np.ndarray   # (rows,) and their standard deviation

    PARTS = ("mean", "inverse", "log_mean", "log_std")

    @classmethod
    def fit(cls, patches: np.ndarray) -> "PatchModel":
        """`patches`: (N, rows, cols, PATCH_DIMS) projected tokens of one ID's train clips."""
        count, rows, cols, dims = patches.shape
        grid = np.asarray(patches, dtype=np.float64).transpose(1, 0, 2, 3).reshape(rows, count * cols, dims)
        mean = grid.mean(axis=1)
        inverse = np.stack([shrunk_inverse(values - centre, float(np.mean(values ** 2)))
                            for values, centre in zip(grid, mean)])
        model = cls(mean, inverse, np.zeros(rows), np.ones(rows))
        logs = np.log(model.distances(patches))  # (N, rows, cols)
        model.log_mean = logs.mean(axis=(0, 2))
        model.log_std = np.maximum(logs.std(axis=(0, 2)), 1e-6)
        return model

    def distances(self, patches: np.ndarray) -> np.ndarray:
        """(N, rows, cols, dims) -> (N, rows, cols) squared Mahalanobis distances, floored above 0."""
        centred = np.asarray(patches, dtype=np.float64) - self.mean[None, :, None, :]
        return np.maximum(np.einsum("nrcd,rde,nrce->nrc", centred, self.inverse, centred), 1e-12)

    def map(self, patches: np.ndarray) -> np.ndarray:
        """(N, rows, cols, dims) -> (N, rows, cols) standardised log distances: the anomaly map."""
        logs = np.log(self.distances(patches))
        return (logs - self.log_mean[None, :, None]) / self.log_std[None, :, None]

    def arrays(self) -> dict[str, np.ndarray]:
        return {part: np.ascontiguousarray(getattr(self, part), dtype=np.float32) for part in self.PARTS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PatchModel":
        return cls(*(np.asarray(arrays[part], dtype=np.float64) for part in cls.PARTS))


def top_mean(maps: np.ndarray) -> np.ndarray:
    """(N, rows, cols) maps -> (N,) the mean of each map's TOP_SHARE highest values."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(TOP_SHARE * flat.shape[1])))
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)
