"""`rcmae score`: anomaly scores and decisions for recordings of any length (window by window), each failure
listed with its reason."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rcmae.augment.featurize import Featurizer
from rcmae.data.audio import AudioError, load_clip
from rcmae.data.classes import machines_of
from rcmae.data.feature_table import machine_key, specs_from_column
from rcmae.data.layout import LayoutError, parse_clip_name
from rcmae.data.names import dcase_id
from rcmae.data.paths import path_text
from rcmae.data.windows import WINDOW_HOP, fit_length, window_starts
from rcmae.detect.encode import TableEncoder, map_values, score_values
from rcmae.errors import RcmaeError
from rcmae.evaluate.maps import plot_map
from rcmae.models.checkpoint import read_meta
from rcmae.stores import fetched

BATCH = 64  # windows featurised and scored at a time
# a recording's score from its windows' scores; mean is the default: on 60 s toy recordings with a 2 s fault
# it scored AUC 0.718 with the fault in the middle or in the first 5 s, max 0.723 / 0.696 (more windows, more
# chances for a normal recording's highest window to pass a fault's), a centre crop 0.686 / 0.537
AGGREGATES = {"max": np.max, "mean": np.mean}


@dataclass
class ScoredRecordings:
    rows: list[dict]      # file, machine_type, machine_id, score, decision: one per scored recording
    failures: list[dict]  # file, reason: one per recording that could not be scored
    windows: list[dict] = field(default_factory=list)  # file, start_s, end_s, score: one per scored window


@dataclass
class ScoredWindows:
    scores: np.ndarray   # (W,) one per window (NaN for a machine the model does not know)
    maps: np.ndarray     # (W, rows, cols) their anomaly maps (NaN likewise)
    logmels: np.ndarray  # (W, n_mels, n_frames) the log-mels the model read


def recordings(paths: list[str]) -> list[str]:
    """The paths given, a folder standing for the .wav files under it."""
    found = []
    for path in paths:
        if Path(path).is_dir():
            found += sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
        else:
            found.append(path)
    return found


class RecordingScorer:
    """A fine-tuned model loaded once, scoring recordings of any length: each is cut into clip-long windows half
    a clip apart (the whole recording when the model keeps every clip's own length, padded as training padded
    when shorter than a clip), the windows featurised and scored in batches, and the recording scored by the
    `aggregate` of its windows' scores, against the machine's decision threshold."""

    def __init__(self, model_dir: str | Path, method: str | None = None, aggregate: str = "mean"):
        if aggregate not in AGGREGATES:
            raise RcmaeError(f"aggregate {aggregate!r}: choose from {sorted(AGGREGATES)}")
        model_dir = fetched(model_dir)  # a store URI: its local copy
        self.meta = read_meta(model_dir)
        self.audio, self.features = self.meta.audio, self.meta.features
        self.method = method or self.meta.score.method
        self.aggregate = aggregate
        self.encoder = TableEncoder(model_dir, with_scores=True, keep_encoded=False, with_maps=True)
        self.featurizer = Featurizer(self.features, self.audio.sample_rate)
        self.thresholds = self.meta.thresholds(self.method)

    @property
    def machines(self) -> list[str]:
        return machines_of(self.meta.classes)

    def windows(self, clip: dict, wave: np.ndarray) -> list[dict]:
        """The rows `Featurizer` reads for one prepared recording (mono, at the model's sample rate)."""
        audio = self.audio
        if audio.clip_seconds is None:
            return [dict(clip, wave=wave, error=None, start_s=0.0, end_s=len(wave) / audio.sample_rate)]
        length = int(round(audio.clip_seconds * audio.sample_rate))
        rows = []
        for start in window_starts(len(wave), length, max(1, int(length * WINDOW_HOP))):
            piece = fit_length(wave[start:start + length], length, audio.pad_mode).astype(np.float32)
            rows.append(dict(clip, wave=piece, error=None, start_s=start / audio.sample_rate,
                             end_s=min(start + length, len(wave)) / audio.sample_rate))
        return rows

    def score_windows(self, windows: list[dict]) -> ScoredWindows:
        """Scores, anomaly maps and log-mels of windows, a batch at a time."""
        features = self.features
        scores, maps, logmels = [], [], []
        for start in range(0, len(windows), BATCH):
            featurised = self.featurizer(pd.DataFrame(windows[start:start + BATCH]))
            scored = self.encoder(featurised)
            scores.append(score_values(scored, self.method))
            maps.append(map_values(scored, features.grid))
            logmels.append(specs_from_column(featurised["features"], features.n_mels, features.n_frames))
        if not scores:
            return ScoredWindows(np.zeros(0), np.zeros((0, *features.grid)),
                                 np.zeros((0, features.n_mels, features.n_frames)))
        return ScoredWindows(np.concatenate(scores), np.concatenate(maps), np.concatenate(logmels))

    def verdict(self, key: str, scores: np.ndarray) -> tuple[float, float, bool]:
        """(score, threshold, decision) of a recording of machine `key` from its windows' scores."""
        score = float(AGGREGATES[self.aggregate](scores))
        threshold = float(self.thresholds[key])
        return score, threshold, score > threshold


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None,
                     aggregate: str = "mean", explain: Path | None = None) -> ScoredRecordings:
    """Scores every readable recording of a machine the model knows (`RecordingScorer`); the others are listed
    with their reason (not found, name outside the DCASE grammar, unreadable audio, unknown machine); a folder
    stands for its .wav files. The machine comes from the DCASE file name, or from `machine_type` / `machine_id`
    (a number, zero-padded as DCASE's) for other names. With `explain`, each scored recording's anomaly maps go
    there (`write_explanation`)."""
    scorer = RecordingScorer(checkpoint_dir, method, aggregate)
    if machine_id is not None:
        machine_id = dcase_id(machine_id)
    clips, failures = [], []
    for path in recordings(paths):
        if not Path(path).is_file():
            failures.append(dict(file=path_text(path), reason="not found"))
        elif machine_type and machine_id:
            clips.append(dict(path=path_text(path), file_name=path_text(Path(path).name), machine_type=machine_type,
                              machine_id=machine_id, split="test", label="unknown", domain="unknown", attributes=""))
        else:
            try:
                clips.append(parse_clip_name(Path(path)))
            except LayoutError as error:
                failures.append(dict(file=path_text(path), reason=f"{error} (or pass --machine-type and --machine-id)"))
    names = explanation_names([clip["path"] for clip in clips]) if explain is not None else {}
    if explain is not None:
        explain.mkdir(parents=True, exist_ok=True)
    result = ScoredRecordings([], failures)
    pending: list[dict] = []  # windows of whole recordings, with their samples, waiting for a batch

    def score_pending() -> None:
        """Score the pending windows; each recording among them is whole, so it gets its verdict now."""
        scored = scorer.score_windows(pending)
        by_path: dict[str, list[int]] = {}
        for i, window in enumerate(pending):
            by_path.setdefault(window["path"], []).append(i)
        for path, mine in by_path.items():
            clip = pending[mine[0]]
            key = machine_key(clip["machine_type"], clip["machine_id"])
            values = scored.scores[mine]
            if np.isnan(values[0]):
                failures.append(dict(file=path, reason=f"unknown machine {key} (this model knows "
                                                       f"{', '.join(scorer.machines)})"))
                continue
            score, threshold, decision = scorer.verdict(key, values)
            result.rows.append(dict(file=path, machine_type=clip["machine_type"], machine_id=clip["machine_id"],
                                    score=score, decision=int(decision)))
            result.windows += [dict(file=path, start_s=round(pending[i]["start_s"], 3),
                                    end_s=round(pending[i]["end_s"], 3), score=float(scored.scores[i])) for i in mine]
            if explain is not None:
                write_explanation(explain / names[path], scorer, [pending[i]["start_s"] for i in mine],
                                  ScoredWindows(values, scored.maps[mine], scored.logmels[mine]),
                                  f"{Path(path).name} ({key}): {scorer.method} {score:.3g}, threshold "
                                  f"{threshold:.3g}: {'ANOMALY' if decision else 'normal'}")
        pending.clear()

    for clip in clips:  # a batch of windows in memory at a time, however many recordings there are
        try:
            wave = load_clip(clip["path"], replace(scorer.audio, clip_seconds=None))
        except AudioError as error:
            failures.append(dict(file=clip["path"], reason=str(error)))
            continue
        pending += scorer.windows(clip, wave)
        if len(pending) >= BATCH:
            score_pending()
    score_pending()
    return result


def explanation_names(paths: list[str]) -> dict[str, str]:
    """A file-name stem per recording, unique among them: its path below the folder they share, `/` as `__`
    (DCASE repeats file names across machine types and sets)."""
    if not paths:
        return {}
    resolved = [Path(path).resolve() for path in paths]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return {path: "__".join(p.relative_to(common).with_suffix("").parts) for path, p in zip(paths, resolved)}


def write_explanation(stem: Path, scorer: RecordingScorer, starts_s: list[float], windows: ScoredWindows,
                      title: str) -> None:
    """`<stem>.npy`: the recording's anomaly maps (windows x rows x cols); `<stem>.png`: its highest-scoring
    window's log-mel under its map."""
    np.save(stem.with_name(stem.name + ".npy"), windows.maps.astype(np.float32))
    best = int(np.argmax(windows.scores))
    window = f" (window at {starts_s[best]:.1f} s)" if len(starts_s) > 1 else ""
    plot_map(stem.with_name(stem.name + ".png"), windows.logmels[best], windows.maps[best], scorer.features,
             scorer.audio.sample_rate, title + window)
