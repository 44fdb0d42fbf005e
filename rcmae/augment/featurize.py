"""Batch transforms from clip-table rows to feature rows: read + validate, augment K variants, log-mel.

They take and return plain pandas / Arrow batches, so the Ray Data pipeline maps them over a cluster and
tests call them directly. A clip that fails to decode or to augment becomes a row with `error` set and
no features; the rest of its batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from rcmae.augment.base import Augmenter, clip_seed
from rcmae.data.audio import AudioError, load_clip
from rcmae.data.feature_table import FEATURE_SCHEMA, feature_rows
from rcmae.features import LogMel, compute_logmel
from rcmae.sections import AudioConfig, FeatureConfig
from rcmae.stores import Relocated, flat


def read_batch(batch: pd.DataFrame, audio: AudioConfig, source: Relocated | None = None) -> pd.DataFrame:
    """Adds `wave` (float32 array or None) and `error` (reason or None) to each clip row (`source`: the clips are
    a working copy's, read from its store)."""
    waves, errors = [], []
    for path in batch["path"]:
        try:
            waves.append(load_clip(_read(source, path), audio, label=path))
            errors.append(None)
        except AudioError as error:
            waves.append(None)
            errors.append(str(error))
    out = batch.copy()
    out["wave"] = waves
    out["error"] = errors
    return out


def _read(source: Relocated | None, path: str) -> str | bytes:
    if source is None:
        return path
    try:
        return source.read(path)
    except OSError as error:
        raise AudioError(path, f"cannot read it from {source.uri} ({flat(error)})") from None


@dataclass(frozen=True)
class Augmentation:
    """What the featuriser adds to each clip of `splits`: `variants` outputs of `augmenter`, each seeded from `seed`,
    the clip's path and the variant's number (`clip_seed`)."""

    augmenter: Augmenter
    variants: int
    seed: int
    splits: tuple[str, ...] = ("train",)


class Featurizer:
    """Callable over read batches: the log-mel of every clip (`features` at `sample_rate`) and, given an
    `augmentation`, its augmented variants."""

    def __init__(self, features: FeatureConfig, sample_rate: int, augmentation: Augmentation | None = None,
                 device: str = "cpu", tag: dict | None = None):
        self.features, self.sample_rate, self.augmentation, self.device = features, sample_rate, augmentation, device
        self.tag = tag or {}  # added to every provenance record (e.g. which worker made it)
        self.extractor = LogMel(features, sample_rate).to(device)

    def logmel(self, items: list[np.ndarray]) -> list[np.ndarray]:
        if len({len(item) for item in items}) == 1:
            return list(compute_logmel(np.stack(items), self.features, self.sample_rate, self.device, self.extractor))
        return [compute_logmel(item[None], self.features, self.sample_rate, self.device, self.extractor)[0]
                for item in items]

    def _augment_variant(self, waves, specs, seeds) -> list:
        """One variant for each clip: augmented log-mel plus provenance, or an exception per failed clip."""
        augmenter = self.augmentation.augmenter
        items = waves if augmenter.domain == "wave" else specs
        try:
            results = augmenter.augment(items, seeds)
        except Exception:  # a bad clip must not sink its batch: retry one by one to find it
            results = []
            for item, seed in zip(items, seeds):
                try:
                    results.extend(augmenter.augment([item], [seed]))
                except Exception as error:
                    results.append(error)
        good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        out: list = list(results)
        if augmenter.domain == "wave" and good:
            for i, spec in zip(good, self.logmel([results[i].data for i in good])):
                out[i] = (spec, results[i].provenance)
        else:
            for i in good:
                out[i] = (results[i].data, results[i].provenance)
        return out

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        rows = batch.to_dict("records")
        for row in rows:  # pandas may hand a missing error back as NaN
            row["error"] = row["error"] if isinstance(row["error"], str) else None
        ok = [i for i, row in enumerate(rows) if row["error"] is None]
        specs = self.logmel([rows[i]["wave"] for i in ok]) if ok else []
        features = dict(zip(ok, specs))
        augmented: dict[int, list] = {i: [] for i in ok}
        provenance: dict[int, list] = {i: [] for i in ok}
        augmentation = self.augmentation
        targets = [i for i in ok if rows[i]["split"] in augmentation.splits] if augmentation else []
        for variant in range(augmentation.variants if targets else 0):
            seeds = [clip_seed(augmentation.seed, rows[i]["path"], variant) for i in targets]
            results = self._augment_variant([rows[i]["wave"] for i in targets], [features[i] for i in targets], seeds)
            for i, result in zip(targets, results):
                if isinstance(result, Exception) and rows[i]["error"] is None:
                    rows[i]["error"] = f"{rows[i]['path']}: augmentation failed ({type(result).__name__}: {result})"
                elif not isinstance(result, Exception):
                    augmented[i].append(result[0].reshape(-1))
                    provenance[i].append(dict(variant=variant, **result[1], **self.tag))
        return feature_rows(rows, features, augmented, provenance, self.features.n_mels, self.features.n_frames)


def featurize_table(clips: pa.Table, audio: AudioConfig, features: FeatureConfig, batch_size: int = 64) -> pa.Table:
    """In-process featurisation without augmentation (evaluation and scoring), errors kept as rows."""
    featurizer = Featurizer(features, audio.sample_rate)
    parts = [featurizer(read_batch(clips.slice(start, batch_size).to_pandas(), audio))
             for start in range(0, clips.num_rows, batch_size)]
    return pa.concat_tables(parts) if parts else FEATURE_SCHEMA.empty_table()
