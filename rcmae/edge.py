"""Scoring on a gateway beside the machine: the folder `rcmae export` writes, run with numpy, onnxruntime and
soundfile only (no torch, no Ray, nothing of rcmae that imports them).

    from rcmae import edge
    detector = edge.load("exported/")
    result = detector.score_file("section_00_source_test_normal_0001.wav")   # machine from a DCASE name
    result = detector.score(wave, 16000, "valve", "00")                       # or a waveform and its machine
    result.score, result.decision

A recording is scored as `rcmae score` scores it: mono, at the model's sample rate (the edge does not resample:
give it audio at `detector.sample_rate`), in clip-long windows half a clip apart, each window's log-mel (numpy's
FFT with the model's window and mel filters) scored by the exported method, the recording's score their mean,
anomalous above the machine's threshold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import soundfile

from rcmae.data.names import dcase_id, machine_id_of
from rcmae.data.windows import WINDOW_HOP, fit_length, window_starts
from rcmae.detect.floor import clip_statistics
from rcmae.detect.fusions import fuse
from rcmae.detect.ppca import GAUSSIAN_PARTS, mahalanobis
from rcmae.detect.rhythm import envelope_autocorrelation
from rcmae.detect.shrunk import ShrunkGaussian

ENCODER, SETTINGS, ARRAYS = "encoder.onnx", "edge.json", "edge.npz"  # as `rcmae.export` writes them
EDGE_FORMAT = 1
LOG_FLOOR = 1e-10  # as `rcmae.features.LogMel`


class EdgeError(ValueError):
    """A recording, a machine or an export folder the edge cannot score with, named with the reason."""


@dataclass(frozen=True)
class EdgeResult:
    score: float
    decision: bool       # True: anomalous (score above the machine's threshold)
    threshold: float
    window_scores: tuple[float, ...]


class EdgeDetector:
    """An exported model: its encoder session, its machines' Gaussians, calibration and thresholds."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        try:
            self.settings = json.loads((folder / SETTINGS).read_text())
            arrays = dict(np.load(folder / ARRAYS))
        except (OSError, ValueError) as error:
            raise EdgeError(f"{folder}: not an rcmae export folder (rcmae export --format onnx): {error}") from None
        if self.settings.get("format") != EDGE_FORMAT:
            raise EdgeError(f"{folder}: exported in format {self.settings.get('format')}, this rcmae reads "
                            f"{EDGE_FORMAT}: export the model again")
        self.session = onnxruntime.InferenceSession(str(folder / ENCODER), providers=["CPUExecutionProvider"])
        self.machines: list[str] = self.settings["machines"]
        self.method: str = self.settings["method"]
        self.members: list[str] = self.settings["members"]
        self.sample_rate: int = self.settings["sample_rate"]
        self.window, self.mel_filters = arrays["window"].astype(np.float64), arrays["mel_filters"].astype(np.float64)
        self.norm_mean, self.norm_std = arrays["norm_mean"][:, None], arrays["norm_std"][:, None]
        self.gaussians = {key: {part: arrays[f"ppca_{part}_{i}"] for part in GAUSSIAN_PARTS}
                          for i, key in enumerate(self.machines)}
        self.profiles = {name: {key: ShrunkGaussian(arrays[f"{name}_mean_{i}"].astype(np.float64),
                                                    arrays[f"{name}_inverse_{i}"].astype(np.float64))
                                for i, key in enumerate(self.machines)} for name in ("stats", "rhythm")}
        # what `fusions.fuse` reads: method -> machine -> (mean, std) of its held-out train log-scores
        self.calibration = {member: {key: tuple(values) for key, values in per_key.items()}
                            for member, per_key in self.settings["calibration"].items()}

    def logmel(self, wave: np.ndarray) -> np.ndarray:
        """(n_mels, n_frames) power mel spectrogram in dB, as the model's training computed it (centred frames,
        reflect padding), cropped or padded with its minimum to the model's frame count."""
        n_fft, hop, n_frames = self.settings["n_fft"], self.settings["hop_length"], self.settings["n_frames"]
        padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
        starts = hop * np.arange(1 + (len(padded) - n_fft) // hop)
        frames = padded[starts[:, None] + np.arange(n_fft)[None, :]] * self.window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        spec = (10.0 * np.log10(power @ self.mel_filters + LOG_FLOOR)).T
        if spec.shape[1] >= n_frames:
            return spec[:, :n_frames]
        return np.concatenate([spec, np.full((len(spec), n_frames - spec.shape[1]), spec.min())], axis=1)

    def window_scores(self, wave: np.ndarray, key: str) -> np.ndarray:
        """The exported method's score of each clip-long window of a prepared recording of machine `key`."""
        length = int(round(self.settings["clip_seconds"] * self.sample_rate)) if self.settings["clip_seconds"] \
            else len(wave)
        specs = np.stack([self.logmel(fit_length(wave[start:start + length], length, self.settings["pad_mode"]))
                          for start in window_starts(len(wave), length, max(1, int(length * WINDOW_HOP)))])
        normalised = (specs - self.norm_mean) / self.norm_std
        keys = [key] * len(specs)
        parts = {}
        if "mahalanobis" in self.members:
            pooled = self.session.run(["pooled"], {"logmel": normalised.astype(np.float32)})[0]
            parts["mahalanobis"] = mahalanobis(pooled, self.gaussians[key])
        if "stats" in self.members:
            parts["stats"] = self.profiles["stats"][key].score(clip_statistics(normalised))
        if "rhythm" in self.members:
            parts["rhythm"] = self.profiles["rhythm"][key].score(envelope_autocorrelation(specs))
        return fuse(self.method, parts, keys, self) if len(self.members) > 1 else parts[self.method]

    def score(self, wave: np.ndarray, sample_rate: int, machine_type: str, machine_id: str | int) -> EdgeResult:
        """Score a waveform ([n] or [channels, n] samples at the model's sample rate) of a machine it knows."""
        key = f"{machine_type}/{dcase_id(machine_id)}"
        if key not in self.gaussians:
            raise EdgeError(f"unknown machine {key}: this model knows {', '.join(self.machines)}")
        if int(sample_rate) != self.sample_rate:
            raise EdgeError(f"audio at {sample_rate} Hz: the edge scores audio at the model's {self.sample_rate} Hz "
                            f"(resample it first)")
        wave = np.asarray(wave, dtype=np.float32)
        wave = wave.mean(axis=0) if wave.ndim == 2 else wave
        if wave.size < self.settings["min_seconds"] * self.sample_rate or not np.isfinite(wave).all() \
                or not wave.any():
            raise EdgeError(f"audio of {wave.size / self.sample_rate:.3f} s is empty, too short, silent or not finite")
        scores = self.window_scores(wave, key)
        score, threshold = float(np.mean(scores)), float(self.settings["thresholds"][key])
        return EdgeResult(score, score > threshold, threshold, tuple(float(s) for s in scores))

    def score_file(self, path: str | Path, machine_type: str | None = None,
                   machine_id: str | int | None = None) -> EdgeResult:
        """Score an audio file; the machine comes from a DCASE path (`<type>/<split>/<name>`) unless given."""
        path = Path(path)
        machine_type = machine_type or path.parent.parent.name
        machine_id = machine_id if machine_id is not None else machine_id_of(path.name)
        if machine_id is None:
            raise EdgeError(f"{path}: not a DCASE file name: give machine_type and machine_id")
        try:
            samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except Exception as error:  # soundfile raises several types for unreadable files
            raise EdgeError(f"{path}: unreadable audio ({error})") from None
        return self.score(samples.T, rate, machine_type, machine_id)


def load(folder: str | Path) -> EdgeDetector:
    """The exported model in `folder` (`rcmae export --format onnx --out folder`)."""
    return EdgeDetector(folder)
