"""`rcmae score`: anomaly scores and decisions for recordings of any length (window by window), each failure
listed with its reason."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.augment.featurize import Featurizer
from rcmae.config import AudioConfig, Config
from rcmae.data.audio import AudioError, fit_length, load_clip
from rcmae.data.feature_table import machine_key
from rcmae.data.layout import LayoutError, parse_clip_name
from rcmae.detect.apply import score_rows
from rcmae.detect.encode import score_values
from rcmae.models.checkpoint import read_meta

BATCH = 64  # windows featurised and scored at a time
WINDOW_HOP = 0.5  # windows of a long recording start this share of a clip apart
AGGREGATES = {"max": np.max, "mean": np.mean}  # a recording's score from its windows' scores


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


def recording_windows(clip: dict, audio: AudioConfig) -> list[dict]:
    """A recording as the rows `Featurizer` reads: one per window, each a clip's length (the whole recording
    when the model keeps every clip's own length)."""
    wave = load_clip(clip["path"], replace(audio, clip_seconds=None))
    if audio.clip_seconds is None:
        return [dict(clip, wave=wave, error=None, start_s=0.0, end_s=len(wave) / audio.sample_rate)]
    length = int(round(audio.clip_seconds * audio.sample_rate))
    rows = []
    for start in window_starts(len(wave), length, max(1, int(length * WINDOW_HOP))):
        piece = fit_length(wave[start:start + length], length, audio.pad_mode).astype(np.float32)
        rows.append(dict(clip, wave=piece, error=None, start_s=start / audio.sample_rate,
                         end_s=min(start + length, len(wave)) / audio.sample_rate))
    return rows


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None,
                     aggregate: str = "max") -> ScoredRecordings:
    """Scores every readable recording of a machine the model knows; the others are listed with their reason
    (not found, name outside the DCASE grammar, unreadable audio, unknown machine); a folder stands for its .wav
    files. The machine comes from the DCASE file name, or from `machine_type` / `machine_id` (a number,
    zero-padded as DCASE's) for other names. A recording longer than the model's clip is scored window by
    window (clip-long windows, half a clip apart, covering all of it) and gets the `aggregate` of its windows'
    scores; its decision compares that with the machine's threshold."""
    meta = read_meta(checkpoint_dir)
    config = Config.from_dict(meta["config"])
    method = method or config.score.method
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
    windows = []
    for clip in clips:
        try:
            windows += recording_windows(clip, config.audio)
        except AudioError as error:
            failures.append(dict(file=clip["path"], reason=str(error)))
    if not windows:
        return ScoredRecordings([], failures)
    featurizer = Featurizer(config, augmenter=None)
    tables = [featurizer(pd.DataFrame(windows[start:start + BATCH])) for start in range(0, len(windows), BATCH)]
    scored = score_rows(checkpoint_dir, tables)
    values, known = score_values(scored, method), ~np.isnan(score_values(scored, method))
    classes = ", ".join(meta.get("classes", []))
    thresholds = meta["detector"]["thresholds"][method]
    rows, kept = [], []
    for path in dict.fromkeys(w["path"] for w in windows):  # each recording once, in the order given
        mine = [i for i, w in enumerate(windows) if w["path"] == path]
        clip = windows[mine[0]]
        key = machine_key(clip["machine_type"], clip["machine_id"])
        if not known[mine[0]]:
            failures.append(dict(file=path, reason=f"unknown machine {key} (this model knows {classes})"))
            continue
        score = float(AGGREGATES[aggregate](values[mine]))
        rows.append(dict(file=path, machine_type=clip["machine_type"], machine_id=clip["machine_id"], score=score,
                         decision=int(score > thresholds[key])))
        kept += [dict(file=path, start_s=round(windows[i]["start_s"], 3), end_s=round(windows[i]["end_s"], 3),
                      score=float(values[i])) for i in mine]
    return ScoredRecordings(rows, failures, kept)
