"""Log-mel features as the paper (16 kHz, n_fft 1024, hop 512, 128 mels, 50-8000 Hz), normalisation
statistics, frame padding, and patchify / unpatchify into (freq x time) patches.

Shapes: waves (B, samples) -> log-mel (B, n_mels, frames) -> patches (B, rows*cols, patch_freq*patch_time),
patches ordered row-major over the (freq, time) grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from rcmae.errors import DataError
from rcmae.sections import FeatureConfig

LOG_FLOOR = 1e-10


class LogMel(torch.nn.Module):
    """Power mel spectrogram (Slaney mel scale and area norm, as librosa and the DCASE baseline) in dB."""

    def __init__(self, config: FeatureConfig, sample_rate: int = 16000):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
            f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels, power=2.0,
            center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(self.mel(waves) + LOG_FLOOR)


def fix_frames(spec: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Crop or right-pad (with the spectrogram's own minimum) the last axis to `n_frames`."""
    frames = spec.shape[-1]
    if frames >= n_frames:
        return spec[..., :n_frames]
    floor = spec.amin(dim=(-2, -1), keepdim=True).expand(*spec.shape[:-1], n_frames - frames)
    return torch.cat([spec, floor], dim=-1)


def compute_logmel(waves: np.ndarray | torch.Tensor, config: FeatureConfig, sample_rate: int = 16000,
                   device: str | torch.device = "cpu", extractor: LogMel | None = None) -> np.ndarray:
    """Batched log-mel, fixed to config.n_frames, as float32 numpy (B, n_mels, n_frames)."""
    extractor = (extractor or LogMel(config, sample_rate)).to(device)
    tensor = torch.as_tensor(np.asarray(waves, dtype=np.float32), device=device)
    with torch.no_grad():
        spec = fix_frames(extractor(tensor), config.n_frames)
    return spec.cpu().numpy()


@dataclass
class Normalizer:
    """Per-mel-band mean and standard deviation, fitted on train clips only."""

    mean: np.ndarray  # (n_mels,)
    std: np.ndarray   # (n_mels,)

    @classmethod
    def fit(cls, specs: np.ndarray) -> "Normalizer":
        """`specs`: (B, n_mels, frames) of train clips."""
        return cls.fit_stream([specs])

    @classmethod
    def fit_stream(cls, batches) -> "Normalizer":
        """The same statistics accumulated over an iterable of (B, n_mels, frames) batches."""
        total = squares = None
        count = 0
        for specs in batches:
            values = np.asarray(specs, dtype=np.float64)
            batch_sum, batch_squares = values.sum(axis=(0, 2)), (values ** 2).sum(axis=(0, 2))
            total = batch_sum if total is None else total + batch_sum
            squares = batch_squares if squares is None else squares + batch_squares
            count += values.shape[0] * values.shape[2]
        if not count:
            raise DataError("cannot fit a normaliser on no data")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
        return cls(mean=mean.astype(np.float32), std=np.maximum(std, 1e-3).astype(np.float32))

    def __call__(self, specs: np.ndarray | torch.Tensor):
        if isinstance(specs, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=specs.device)[:, None]
            std = torch.as_tensor(self.std, device=specs.device)[:, None]
            return (specs - mean) / std
        return (specs - self.mean[:, None]) / self.std[:, None]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "Normalizer":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalizer":
        return cls(mean=np.asarray(data["mean"], np.float32), std=np.asarray(data["std"], np.float32))


def patchify(specs: torch.Tensor, patch_freq: int, patch_time: int) -> torch.Tensor:
    """(B, F, T) -> (B, (F/pf)*(T/pt), pf*pt); F and T must be whole multiples of the patch."""
    batch, freq, time = specs.shape
    if freq % patch_freq or time % patch_time:
        raise ValueError(f"spectrogram {freq}x{time} is not a whole number of {patch_freq}x{patch_time} patches")
    rows, cols = freq // patch_freq, time // patch_time
    x = specs.reshape(batch, rows, patch_freq, cols, patch_time)
    return x.permute(0, 1, 3, 2, 4).reshape(batch, rows * cols, patch_freq * patch_time)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch_freq: int, patch_time: int) -> torch.Tensor:
    """Inverse of patchify: (B, rows*cols, pf*pt) -> (B, rows*pf, cols*pt)."""
    rows, cols = grid
    batch = patches.shape[0]
    x = patches.reshape(batch, rows, cols, patch_freq, patch_time)
    return x.permute(0, 1, 3, 2, 4).reshape(batch, rows * patch_freq, cols * patch_time)
