"""The web page's picture of a recording: its whole log-mel, at most `MAX_COLUMNS` columns, as 8-bit levels."""

from __future__ import annotations

import numpy as np
import torch

from rcmae.features import LogMel
from rcmae.sections import FeatureConfig

MAX_COLUMNS = 600


def logmel_view(wave: np.ndarray, features: FeatureConfig, sample_rate: int) -> dict:
    """{"n_mels", "n_columns", "seconds", "levels": row-major uint8 levels (low frequencies first), "db_min",
    "db_max"} of a prepared recording."""
    with torch.no_grad():
        spec = LogMel(features, sample_rate)(torch.from_numpy(wave)).numpy()
    step = int(np.ceil(spec.shape[1] / MAX_COLUMNS))
    columns = spec.shape[1] // step if spec.shape[1] >= step else 1
    spec = spec[:, :columns * step].reshape(spec.shape[0], columns, step).mean(axis=2)
    low, high = float(np.percentile(spec, 1)), float(spec.max())
    levels = np.clip((spec - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    return dict(n_mels=int(spec.shape[0]), n_columns=int(columns), seconds=len(wave) / sample_rate,
                levels=levels.ravel().tolist(), db_min=round(low, 2), db_max=round(high, 2))
