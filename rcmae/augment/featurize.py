"""Batch transforms from clip-table rows to feature rows: read + validate, augment K variants, log-mel.

They take and return plain pandas / Arrow batches, so the Ray Data pipeline maps them over a cluster and
tests call them directly. A clip that fails to decode or to augment becomes a row with `error` set and
no features; the rest of its batch goes on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from rcmae.augment.base import Augmenter, clip_seed
from rcmae.config import AudioConfig, Config
from rcmae.data.audio import AudioError, load_clip
from rcmae.data.feature_table import FEATURE_SCHEMA, feature_rows
from rcmae.features import LogMel, compute_logmel
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


class Featurizer:
    """Callable over read batches: K augmented variants for clips of `augment_splits`, log-mel of all."""

    def __init__(self, config: Config, augmenter: Augmenter | None, augment_splits: tuple[str, ...] = ("train",),
                 device: str = "cpu", tag: dict | None = None):
        self.config, self.augmenter, self.device = config, augmenter, device
        self.tag = tag or {}  # added to every provenance record (e.g. which worker made it)
        self.augment_splits = augment_splits
        self.extractor = LogMel(config.features, config.audio.sample_rate).to(device)

    def logmel(self, items: list[np.ndarray]) -> list[np.ndarray]:
        if len({len(item) for item in items}) == 1:
            return list(compute_logmel(np.stack(items), self.config.features, self.config.audio.sample_rate,
                                       self.device, self.extractor))
        return [compute_logmel(item[None], self.config.features, self.config.audio.sample_rate, self.device,
                               self.extractor)[0] for item in items]

    def _augment_variant(self, waves, specs, seeds) -> list:
        """One variant for each clip: augmented log-mel plus provenance, or an exception per failed clip."""
        items = waves if self.augmenter.domain == "wave" else specs
        try:
            results = self.augmenter.augment(items, seeds)
        except Exception:  # a bad clip must not sink its batch: retry one by one to find it
            results = []
            for item, seed in zip(items, seeds):
                try:
                    results.extend(self.augmenter.augment([item], [seed]))
                except Exception as error:
                    results.append(error)
        good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        out: list = list(results)
        if self.augmenter.domain == "wave" and good:
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
        targets = [i for i in ok if rows[i]["split"] in self.augment_splits] if self.augmenter else []
        for variant in range(self.config.augment.variants if targets else 0):
            seeds = [clip_seed(self.config.augment.seed, rows[i]["path"], variant) for i in targets]
            results = self._augment_variant([rows[i]["wave"] for i in targets], [features[i] for i in targets], seeds)
            for i, result in zip(targets, results):
                if isinstance(result, Exception) and rows[i]["error"] is None:
                    rows[i]["error"] = f"{rows[i]['path']}: augmentation failed ({type(result).__name__}: {result})"
                elif not isinstance(result, Exception):
                    augmented[i].append(result[0].reshape(-1))
                    provenance[i].append(dict(variant=variant, **result[1], **self.tag))
        return feature_rows(rows, features, augmented, provenance, self.config.features.n_mels,
                            self.config.features.n_frames)


def featurize_table(clips: pa.Table, config: Config, batch_size: int = 64) -> pa.Table:
    """In-process featurisation without augmentation (evaluation and scoring), errors kept as rows."""
    featurizer = Featurizer(config, augmenter=None)
    parts = [featurizer(read_batch(clips.slice(start, batch_size).to_pandas(), config.audio))
             for start in range(0, clips.num_rows, batch_size)]
    return pa.concat_tables(parts) if parts else FEATURE_SCHEMA.empty_table()
