"""Anomaly maps as a user sees them: where each patch of the (frequency x time) grid lies in seconds and hertz,
which patches a known fault region covers, and a picture of a clip's log-mel with its map over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcmae.sections import FeatureConfig


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (the one `rcmae.features.LogMel` uses): linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=float)
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4), hz * 3 / 200.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=float)
    return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), mel * 200.0 / 3)


def patch_bands(features: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) hertz of each patch row: from its lowest mel band's lower edge to its highest band's upper
    edge (mel filters reach to their neighbours' centres)."""
    rows = features.grid[0]
    points = mel_to_hz(np.linspace(hz_to_mel(features.f_min), hz_to_mel(features.f_max), features.n_mels + 2))
    return points[np.arange(rows) * features.patch_freq], points[np.arange(1, rows + 1) * features.patch_freq + 1]


def patch_times(features: FeatureConfig, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) seconds of each patch column within its clip (frame t is centred at t * hop)."""
    cols = features.grid[1]
    frame_s = features.hop_length / sample_rate
    starts = np.arange(cols) * features.patch_time * frame_s
    return starts, starts + features.patch_time * frame_s


def region_mask(region: dict, features: FeatureConfig, sample_rate: int, offset_s: float = 0.0) -> np.ndarray:
    """(rows, cols) True where a patch overlaps a fault region (`spans` in seconds of the recording, `band_hz`) of
    a window starting `offset_s` into the recording; all False for a fault that left no trace."""
    mask = np.zeros(features.grid, dtype=bool)
    band = region.get("band_hz")
    if not band or not region.get("spans"):
        return mask
    starts, ends = patch_times(features, sample_rate)
    in_time = np.zeros(len(starts), dtype=bool)
    for start, end in region["spans"]:
        in_time |= (starts < end - offset_s) & (ends > start - offset_s)
    lows, highs = patch_bands(features)
    mask[np.ix_((lows < band[1]) & (highs > band[0]), in_time)] = True
    return mask


def plot_map(path: str | Path, logmel: np.ndarray, amap: np.ndarray, features: FeatureConfig, sample_rate: int,
             title: str, region: np.ndarray | None = None) -> None:
    """A PNG of one clip's log-mel (grey) under its anomaly map (colour, at patch resolution), with the patches of a
    known fault region outlined."""
    plt = pyplot()
    rows, cols = amap.shape
    seconds = logmel.shape[1] * features.hop_length / sample_rate
    figure, axis = plt.subplots(figsize=(7, 3.6))
    axis.imshow(logmel, origin="lower", aspect="auto", cmap="gray", extent=(0, seconds, 0, rows))
    shown = axis.imshow(amap, origin="lower", aspect="auto", cmap="magma", alpha=0.55, extent=(0, seconds, 0, rows),
                        interpolation="nearest")
    if region is not None and region.any():  # padded by one patch all round, so its edge on a border is drawn too
        width = seconds / cols
        outline = np.kron(np.pad(region, 1), np.ones((8, 8))).astype(float)
        axis.contour(outline, levels=[0.5], colors="cyan", linewidths=1.5, origin="lower",
                     extent=(-width, seconds + width, -1, rows + 1))
        axis.set_xlim(0, seconds)
        axis.set_ylim(0, rows)
    lows, highs = patch_bands(features)
    axis.set_yticks(np.arange(rows + 1), [f"{hz:.0f}" for hz in np.append(lows, highs[-1])], fontsize=7)
    axis.set_xlabel("seconds")
    axis.set_ylabel("Hz (patch rows)")
    axis.set_title(title, fontsize=9)
    figure.colorbar(shown, ax=axis, label="patch anomaly (train-normal z)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
