"""Decode and validate one clip: soundfile decode, mono mix, 16 kHz resample, pad/crop.

Every failure is an AudioError with a reason; the pipeline turns it into a reject row and moves on.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from rcmae.data.paths import path_of
from rcmae.data.windows import fit_length
from rcmae.errors import RcmaeError
from rcmae.sections import AudioConfig


def rms(wave: np.ndarray) -> float:
    """Root mean square (in float64, so float32 audio gives the same figure), never exactly zero."""
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))) + 1e-12)


class AudioError(RcmaeError):
    """A clip cannot be used; `str(error)` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def decode(source: str | Path | bytes, label: str | Path | None = None) -> tuple[np.ndarray, int]:
    """(samples [channels, n] float32, sample rate) from a path or the file's bytes."""
    name = label if label is not None else (source if not isinstance(source, bytes) else "<bytes>")
    try:
        # an open file rather than a name: soundfile encodes names as strict UTF-8, which non-UTF-8 names are not
        with io.BytesIO(source) if isinstance(source, bytes) else open(path_of(source), "rb") as handle:
            data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt input
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the bytes", str(error))
        raise AudioError(name, f"unreadable or truncated audio ({type(error).__name__}: {reason})") from None
    return data.T, int(rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=0) if samples.ndim == 2 else samples


def resample(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return wave
    tensor = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return AF.resample(tensor, rate, target_rate).numpy()


def validate(wave: np.ndarray, rate: int, config: AudioConfig, name: str | Path) -> None:
    if wave.size == 0:
        raise AudioError(name, "zero-length audio")
    if not np.all(np.isfinite(wave)):
        raise AudioError(name, "audio contains NaN or Inf samples")
    if not np.any(wave):
        raise AudioError(name, "audio is all zeros (silent)")
    seconds = wave.size / rate
    if seconds < config.min_seconds:
        raise AudioError(name, f"clip is {seconds:.3f} s, shorter than the minimum {config.min_seconds} s")


def load_clip(source: str | Path | bytes, config: AudioConfig, label: str | Path | None = None) -> np.ndarray:
    """A validated mono float32 wave at config.sample_rate, padded/cropped to config.clip_seconds."""
    name = label if label is not None else source
    samples, rate = decode(source, label=name)
    return prepare(samples, rate, config, name)


def prepare(samples: np.ndarray, rate: int, config: AudioConfig, name: str | Path) -> np.ndarray:
    """Samples ([channels, n] or [n]) as training prepared every clip: mono, validated, at config.sample_rate,
    padded/cropped to config.clip_seconds (kept whole when that is None)."""
    wave = to_mono(np.asarray(samples, dtype=np.float32))
    validate(wave, rate, config, name)
    wave = resample(wave, rate, config.sample_rate)
    if config.clip_seconds is not None:
        wave = fit_length(wave, int(round(config.clip_seconds * config.sample_rate)), config.pad_mode)
    return wave.astype(np.float32)


def typical_seconds(paths: list[str], sample: int = 20) -> float | None:
    """The median length of a sample of the clips (None when none is readable)."""
    step = max(1, len(paths) // sample)
    lengths = []
    for path in paths[::step][:sample]:
        try:
            with open(path_of(path), "rb") as handle:
                lengths.append(sf.info(handle).duration)
        except Exception:  # unreadable clips are reported where they are read
            continue
    return float(np.median(lengths)) if lengths else None


def cropping_note(paths: list[str], config: AudioConfig) -> str | None:
    """What the run would silently lose: a note when the clips are much longer than the length every clip is
    cropped to, naming the settings that keep them whole. None when nothing is lost."""
    if config.clip_seconds is None or not paths:
        return None
    seconds = typical_seconds(paths)
    if seconds is None or seconds <= 1.5 * config.clip_seconds:
        return None
    return (f"the clips last ~{seconds:.1f} s but this config crops every clip to {config.clip_seconds:g} s: "
            f"for whole clips use --preset cpu (10 s clips on a CPU) or --preset paper (GPUs), or keep this model "
            f"and set --set audio.clip_seconds={seconds:.0f} --set features.n_frames={frames_for(seconds)}")


def frames_for(seconds: float, sample_rate: int = 16000, hop: int = 512, multiple: int = 10) -> int:
    """Log-mel frames of a clip, rounded up to a whole number of `multiple`-frame patches."""
    frames = int(seconds * sample_rate // hop) + 1
    return -(-frames // multiple) * multiple


def write_wav(path: str | Path, wave: np.ndarray, rate: int) -> None:
    """16-bit PCM mono, clipped to [-1, 1]."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16")
