"""The rhythm of a clip, read from its log-mel: how each band's loudness repeats over time.

A machine that works in cycles (a valve's strokes, a slider's travel, a belt's seams) repeats its sound at its
own lags; a fault that drops, adds or displaces strokes, or modulates the sound, changes that pattern without
changing the average spectrum that pooled features keep. The statistic is the normalised autocorrelation of each
band group's envelope (its mean log-mel over the group's bands, minus its mean over the clip) at lags up to
MAX_LAG_FRAMES, averaged in LAG_BINS equal bins: phase-free, so a clip's start does not matter. An rcmae extension.
"""

from __future__ import annotations

import numpy as np

BAND_GROUPS = 8       # envelopes per clip: the mel bands split into this many equal groups (low to high)
MAX_LAG_FRAMES = 64   # the longest lag, in frames (2 s at hop 512 and 16 kHz), and at most 3/4 of the clip
LAG_BINS = 24         # lags averaged into this many bins per group


def envelope_autocorrelation(specs: np.ndarray) -> np.ndarray:
    """(N, F, T) log-mels -> (N, groups * bins): each band group's envelope autocorrelation, lag 0 = 1 left out."""
    specs = np.asarray(specs, dtype=np.float64)
    count, bands, frames = specs.shape
    groups = min(BAND_GROUPS, bands)
    envelopes = np.stack([part.mean(axis=1) for part in np.array_split(specs, groups, axis=1)], axis=1)
    envelopes = envelopes - envelopes.mean(axis=2, keepdims=True)
    spectrum = np.fft.rfft(envelopes, n=2 * frames, axis=2)  # zero-padded: the linear, not circular, correlation
    correlation = np.fft.irfft(np.abs(spectrum) ** 2, n=2 * frames, axis=2)[..., :frames]
    # a flat envelope (silence, a steady tone) has no rhythm: its correlation is 0 at every lag
    correlation = correlation / np.maximum(correlation[..., :1], 1e-12 * frames)
    max_lag = max(1, min(MAX_LAG_FRAMES, frames * 3 // 4))
    lag_bins = np.array_split(np.arange(1, max_lag + 1), min(LAG_BINS, max_lag))
    return np.stack([correlation[..., lags].mean(axis=2) for lags in lag_bins], axis=2).reshape(count, -1)
