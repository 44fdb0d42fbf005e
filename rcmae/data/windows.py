"""A recording as clip-long windows, as training saw clips: numpy only (the edge runtime windows with it too)."""

from __future__ import annotations

import numpy as np

WINDOW_HOP = 0.5  # windows of a long recording start this share of a clip apart


def fit_length(wave: np.ndarray, length: int, pad_mode: str) -> np.ndarray:
    """Crop the centre of a long clip, or pad a short one with zeros or by repetition."""
    if len(wave) >= length:
        start = (len(wave) - length) // 2
        return wave[start:start + length]
    if pad_mode == "repeat":
        return np.tile(wave, int(np.ceil(length / len(wave))))[:length]
    return np.pad(wave, (0, length - len(wave)))


def window_starts(samples: int, length: int, hop: int) -> list[int]:
    """Starts of the clip-long windows that cover a recording of `samples` (one window, padded as training
    padded, for a recording no longer than a clip; the last window ends at the recording's end)."""
    if samples <= length:
        return [0]
    starts = list(range(0, samples - length + 1, hop))
    return starts if starts[-1] == samples - length else starts + [samples - length]
