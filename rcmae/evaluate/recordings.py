"""`rcmae score`: anomaly scores and decisions for recordings of any length (window by window), each failure
listed with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.augment.featurize import Featurizer
from rcmae.config import Config
from rcmae.data.audio import AudioError, fit_length, load_clip
from rcmae.data.feature_table import machine_key
from rcmae.data.layout import LayoutError, parse_clip_name
from rcmae.detect.encode import TableEncoder, score_values
from rcmae.errors import RcmaeError
from rcmae.models.checkpoint import read_meta

BATCH = 64  # windows featurised and scored at a time
WINDOW_HOP = 0.5  # windows of a long recording start this share of a clip apart
# a recording's score from its windows' scores; mean is the default: on 60 s toy recordings with a 2 s fault
# it scored AUC 0.718 with the fault in the middle or in the first 5 s, max 0.723 / 0.696 (more windows, more
# chances for a normal recording's highest window to pass a fault's), a centre crop 0.686 / 0.537
AGGREGATES = {"max": np.max, "mean": np.mean}


@dataclass
class ScoredRecordings:
    rows: list[dict]      # file, machine_type, machine_id, score, decision: one per scored recording
    failures: list[dict]  # file, reason: one per recording that could not be scored
    windows: list[dict] = field(default_factory=list)  # file, start_s, end_s, score: one per scored window


def recordings(paths: list[str]) -> list[str]:
    """The paths given, a folder standing for the .wav files under it."""
    found = []
    for path in paths:
        if Path(path).is_dir():
            found += sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
        else:
            found.append(path)
    return found


def window_starts(samples: int, length: int, hop: int) -> list[int]:
    """Starts of the clip-long windows that cover a recording of `samples` (one window, padded as training
    padded, for a recording no longer than a clip; the last window ends at the recording's end)."""
    if samples <= length:
        return [0]
    starts = list(range(0, samples - length + 1, hop))
    return starts if starts[-1] == samples - length else starts + [samples - length]


class RecordingScorer:
    """A fine-tuned model loaded once, scoring recordings of any length: each is cut into clip-long windows half
    a clip apart (the whole recording when the model keeps every clip's own length, padded as training padded
    when shorter than a clip), the windows featurised and scored in batches, and the recording scored by the
    `aggregate` of its windows' scores, against the machine's decision threshold."""

    def __init__(self, model_dir: str | Path, method: str | None = None, aggregate: str = "mean"):
        if aggregate not in AGGREGATES:
            raise RcmaeError(f"aggregate {aggregate!r}: choose from {sorted(AGGREGATES)}")
        self.meta = read_meta(model_dir)
        self.config = Config.from_dict(self.meta["config"])
        self.method = method or self.config.score.method
        self.aggregate = aggregate
        self.encoder = TableEncoder(model_dir, with_scores=True, keep_encoded=False)
        self.featurizer = Featurizer(self.config, augmenter=None)
        self.thresholds = self.meta["detector"]["thresholds"][self.method]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    def windows(self, clip: dict, wave: np.ndarray) -> list[dict]:
        """The rows `Featurizer` reads for one prepared recording (mono, at the model's sample rate)."""
        audio = self.config.audio
        if audio.clip_seconds is None:
            return [dict(clip, wave=wave, error=None, start_s=0.0, end_s=len(wave) / audio.sample_rate)]
        length = int(round(audio.clip_seconds * audio.sample_rate))
        rows = []
        for start in window_starts(len(wave), length, max(1, int(length * WINDOW_HOP))):
            piece = fit_length(wave[start:start + length], length, audio.pad_mode).astype(np.float32)
            rows.append(dict(clip, wave=piece, error=None, start_s=start / audio.sample_rate,
                             end_s=min(start + length, len(wave)) / audio.sample_rate))
        return rows

    def window_scores(self, windows: list[dict]) -> np.ndarray:
        """One score per window (NaN for a machine the model does not know)."""
        parts = [score_values(self.encoder(self.featurizer(pd.DataFrame(windows[start:start + BATCH]))),
                              self.method) for start in range(0, len(windows), BATCH)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def verdict(self, key: str, scores: np.ndarray) -> tuple[float, float, bool]:
        """(score, threshold, decision) of a recording of machine `key` from its windows' scores."""
        score = float(AGGREGATES[self.aggregate](scores))
        threshold = float(self.thresholds[key])
        return score, threshold, score > threshold


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None,
                     aggregate: str = "mean") -> ScoredRecordings:
    """Scores every readable recording of a machine the model knows (`RecordingScorer`); the others are listed
    with their reason (not found, name outside the DCASE grammar, unreadable audio, unknown machine); a folder
    stands for its .wav files. The machine comes from the DCASE file name, or from `machine_type` / `machine_id`
    (a number, zero-padded as DCASE's) for other names."""
    scorer = RecordingScorer(checkpoint_dir, method, aggregate)
    if machine_id is not None and machine_id.isdigit():
        machine_id = f"{int(machine_id):02d}"
    clips, failures = [], []
    for path in recordings(paths):
        if not Path(path).is_file():
            failures.append(dict(file=str(path), reason="not found"))
        elif machine_type and machine_id:
            clips.append(dict(path=str(path), file_name=Path(path).name, machine_type=machine_type,
                              machine_id=machine_id, split="test", label="unknown", domain="unknown", attributes=""))
        else:
            try:
                clips.append(parse_clip_name(Path(path)))
            except LayoutError as error:
                failures.append(dict(file=str(path), reason=f"{error} (or pass --machine-type and --machine-id)"))
    pending: list[dict] = []  # windows, with their samples, waiting for a batch
    scored: dict[str, list[tuple[dict, float]]] = {}  # path -> its windows (without samples) and their scores

    def score_pending() -> None:
        for window, value in zip(pending, scorer.window_scores(pending)):
            scored.setdefault(window["path"], []).append((dict(window, wave=None), float(value)))
        pending.clear()

    for clip in clips:  # a batch of windows in memory at a time, however many recordings there are
        try:
            wave = load_clip(clip["path"], replace(scorer.config.audio, clip_seconds=None))
        except AudioError as error:
            failures.append(dict(file=clip["path"], reason=str(error)))
            continue
        pending += scorer.windows(clip, wave)
        if len(pending) >= BATCH:
            score_pending()
    score_pending()
    rows, kept = [], []
    for path, mine in scored.items():  # each recording once, in the order given
        clip = mine[0][0]
        key = machine_key(clip["machine_type"], clip["machine_id"])
        values = np.array([value for _, value in mine])
        if np.isnan(values[0]):
            failures.append(dict(file=path, reason=f"unknown machine {key} (this model knows "
                                                   f"{', '.join(scorer.classes)})"))
            continue
        score, _, decision = scorer.verdict(key, values)
        rows.append(dict(file=path, machine_type=clip["machine_type"], machine_id=clip["machine_id"], score=score,
                         decision=int(decision)))
        kept += [dict(file=path, start_s=round(window["start_s"], 3), end_s=round(window["end_s"], 3), score=value)
                 for window, value in mine]
    return ScoredRecordings(rows, failures, kept)
