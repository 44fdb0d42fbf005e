"""`Encoded` values for detector tests, from pooled features alone: the rhythm, patch and statistics parts, unless
given, are derived from the pooled features (so degenerate clips stay degenerate in every part)."""

import numpy as np

from rcmae.detect.detector import Encoded
from rcmae.detect.patches import PATCH_DIMS


def encoded(pooled, embeddings=None, log_probs=None, rhythm=None, patches=None, stats=None) -> Encoded:
    pooled = np.asarray(pooled, dtype=float)
    count, width = pooled.shape
    tiled = np.tile(pooled, (1, -(-PATCH_DIMS // width)))[:, :PATCH_DIMS].reshape(count, 1, 1, PATCH_DIMS)
    return Encoded(pooled,
                   pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                   if embeddings is None else np.asarray(embeddings, dtype=float),
                   np.zeros((count, 0)) if log_probs is None else np.asarray(log_probs, dtype=float),
                   pooled.copy() if rhythm is None else np.asarray(rhythm, dtype=float),
                   tiled if patches is None else np.asarray(patches, dtype=float),
                   pooled.copy() if stats is None else np.asarray(stats, dtype=float))
