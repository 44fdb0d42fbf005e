"""Random time and frequency masking on log-mel: the paper's Table 3 "Baseline" augmentation."""

from __future__ import annotations

import numpy as np

from rcmae.augment.base import Augmented
from rcmae.config import AugmentConfig


class SpecAugment:
    name = "specaugment"
    domain = "spec"

    def __init__(self, config: AugmentConfig, sample_rate: int = 16000, device: str = "cpu"):
        self.time_masks, self.freq_masks = config.time_masks, config.freq_masks
        self.max_fraction = config.max_mask_fraction

    def _masks(self, rng: np.random.Generator, size: int, count: int) -> list[list[int]]:
        widest = max(1, int(size * self.max_fraction))
        spans = []
        for _ in range(count):
            width = int(rng.integers(1, widest + 1))
            start = int(rng.integers(0, size - width + 1))
            spans.append([start, width])
        return spans

    def augment(self, items: list[np.ndarray], seeds: list[int]) -> list[Augmented]:
        results = []
        for spec, seed in zip(items, seeds):
            rng = np.random.default_rng(seed)
            out = spec.copy()
            fill = float(spec.mean())
            freq = self._masks(rng, spec.shape[0], self.freq_masks)
            time = self._masks(rng, spec.shape[1], self.time_masks)
            for start, width in freq:
                out[start:start + width, :] = fill
            for start, width in time:
                out[:, start:start + width] = fill
            results.append(Augmented(out, dict(augmenter=self.name, seed=seed, freq_masks=freq, time_masks=time)))
        return results
