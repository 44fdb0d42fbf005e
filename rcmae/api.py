"""The Python API: a fine-tuned model scoring waveforms already in memory or files, without Ray.

    from rcmae import Detector
    detector = Detector.load("runs/main/finetune/model")
    result = detector.score(wave, 16000, machine_type="fan", machine_id="00")
    print(result.score, result.decision, result.threshold)
    detector.score_file("dev_data/fan/test/anomaly_id_00_00000000.wav")  # type and ID from the DCASE name
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rcmae.config import Config
from rcmae.data.audio import load_clip, prepare
from rcmae.data.feature_table import machine_key
from rcmae.data.layout import parse_clip_name
from rcmae.data.names import attributes_of, dcase_id
from rcmae.errors import RcmaeError
from rcmae.evaluate.recordings import RecordingScorer
from rcmae.sections import FeatureConfig


@dataclass(frozen=True)
class Result:
    score: float                # the recording's score: the mean (or max) of its windows' scores (higher = odder)
    decision: bool              # score > threshold: anomalous
    threshold: float            # the machine's decision threshold (fitted on its train-normal clips)
    method: str                 # the score method
    window_scores: tuple[float, ...]    # one per clip-long window, half a clip apart
    window_starts_s: tuple[float, ...]  # where each window starts in the recording
    # with explain=True: (windows, rows, cols) anomaly maps, one value per patch of each window's (frequency x time)
    # grid, low rows low frequencies (`rcmae.evaluate.maps.patch_bands` / `patch_times` give hertz and seconds)
    maps: np.ndarray | None = None


@dataclass(frozen=True)
class Prepared:
    """A recording checked and prepared for the model (`Detector.prepare`)."""

    key: str            # the machine, "type/ID"
    machine_type: str
    machine_id: str
    wave: np.ndarray    # mono, at the model's sample rate, whole
    attributes: str = ""  # what a DCASE 2022-2025 file name says of its operating conditions (stage 2's classes)


class Detector:
    """A fine-tuned model folder (`rcmae finetune`'s `model/`) ready to score; see the module's example."""

    def __init__(self, scorer: RecordingScorer):
        self._scorer = scorer

    @classmethod
    def load(cls, model_dir: str | Path, method: str | None = None, aggregate: str = "mean") -> "Detector":
        return cls(RecordingScorer(model_dir, method, aggregate))

    @property
    def machines(self) -> list[str]:
        """The machines ("type/ID") the model knows."""
        return self._scorer.machines

    @property
    def sample_rate(self) -> int:
        return self._scorer.audio.sample_rate

    @property
    def clip_seconds(self) -> float | None:
        """The model's clip length: longer recordings are scored in windows of it (None: each clip whole)."""
        return self._scorer.audio.clip_seconds

    @property
    def method(self) -> str:
        return self._scorer.method

    @property
    def features(self) -> FeatureConfig:
        """How the model turns audio into log-mels."""
        return self._scorer.features

    @property
    def config(self) -> Config:
        """The configuration the model was trained with."""
        return self._scorer.meta.made_with()

    def score(self, waveform: np.ndarray, sample_rate: int, machine_type: str, machine_id: str | int,
              explain: bool = False, attributes: str = "") -> Result:
        """Score a waveform ([n] or [channels, n] samples), resampled and downmixed as the training clips were;
        `explain` adds the anomaly maps; `attributes` (`vel_8_loc_A`) name its class for a model whose stage 2
        classified attributes (the paper's score reads it)."""
        prepared = self.prepare(waveform, sample_rate, machine_type, machine_id, attributes=attributes)
        return self.score_prepared([prepared], explain)[0]

    def score_file(self, path: str | Path, machine_type: str | None = None,
                   machine_id: str | int | None = None, explain: bool = False) -> Result:
        """Score an audio file; the machine (and its attributes) come from a DCASE file name unless given."""
        if machine_type is None or machine_id is None:
            clip = parse_clip_name(Path(path))
            machine_type, machine_id = clip["machine_type"], clip["machine_id"]
        wave = load_clip(path, replace(self._scorer.audio, clip_seconds=None))
        return self.score(wave, self.sample_rate, machine_type, machine_id, explain, attributes_of(Path(path).name))

    def prepare(self, waveform: np.ndarray, sample_rate: int, machine_type: str, machine_id: str | int,
                name: str = "<waveform>", attributes: str = "") -> Prepared:
        """A waveform checked (a machine this model knows, audio as training accepted it: an `RcmaeError`
        naming `name` otherwise), downmixed and resampled, ready for `score_prepared`."""
        machine_id = dcase_id(machine_id)
        key = machine_key(machine_type, machine_id)
        if key not in self.machines:
            raise RcmaeError(f"unknown machine {key}: this model knows {', '.join(self.machines)}")
        audio = replace(self._scorer.audio, clip_seconds=None)
        return Prepared(key, machine_type, machine_id, prepare(np.asarray(waveform), int(sample_rate), audio, name),
                        attributes)

    def score_prepared(self, recordings: list[Prepared], explain: bool = False) -> list[Result]:
        """Results of several prepared recordings, their windows scored together (a batch of requests shares
        the model's passes; each result equals the recording scored alone)."""
        windows = [self._scorer.windows(dict(path=str(i), file_name="<waveform>", machine_type=r.machine_type,
                                             machine_id=r.machine_id, split="test", label="unknown",
                                             domain="unknown", attributes=r.attributes), r.wave)
                   for i, r in enumerate(recordings)]
        scored = self._scorer.score_windows([w for mine in windows for w in mine])
        results, first = [], 0
        for recording, mine in zip(recordings, windows):
            part = slice(first, first + len(mine))
            first += len(mine)
            score, threshold, decision = self._scorer.verdict(recording.key, scored.scores[part])
            results.append(Result(score=score, decision=decision, threshold=threshold, method=self._scorer.method,
                                  window_scores=tuple(float(s) for s in scored.scores[part]),
                                  window_starts_s=tuple(round(w["start_s"], 3) for w in mine),
                                  maps=scored.maps[part] if explain else None))
        return results
