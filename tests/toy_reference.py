"""A deliberately simple reference detector: per machine ID, a Gaussian on each clip's mean log-mel
vector (Mahalanobis distance with shrinkage). It calibrates the toy factory's difficulty: a data set
this detector solves perfectly would teach nothing about RC-MAE.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rcmae.config import AudioConfig, FeatureConfig
from rcmae.data.audio import load_clip
from rcmae.evaluate.metrics import id_metrics, summarize
from rcmae.features import LogMel, compute_logmel


def mean_logmel(paths: list[str], audio: AudioConfig, features: FeatureConfig) -> np.ndarray:
    extractor = LogMel(features, audio.sample_rate)
    rows = []
    for path in paths:
        wave = load_clip(path, audio)
        spec = compute_logmel(wave[None], features, audio.sample_rate, extractor=extractor)[0]
        rows.append(spec.mean(axis=1))
    return np.stack(rows)


def mahalanobis_scores(train: np.ndarray, test: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(cov)) * np.trace(cov) / len(cov)
    inverse = np.linalg.inv(cov)
    centred = test - mean
    return np.einsum("ij,jk,ik->i", centred, inverse, centred)


def evaluate_reference(table: pa.Table, audio: AudioConfig, features: FeatureConfig) -> dict:
    """metrics.json-shaped results of the reference detector on a labelled clip table."""
    rows = table.to_pylist()
    per_id = []
    for key in sorted({(r["machine_type"], r["machine_id"]) for r in rows}):
        clips = [r for r in rows if (r["machine_type"], r["machine_id"]) == key]
        train = [r["path"] for r in clips if r["split"] == "train"]
        test = [r for r in clips if r["split"] == "test" and r["label"] in ("normal", "anomaly")]
        if not train or not test:
            continue
        scores = mahalanobis_scores(mean_logmel(train, audio, features),
                                    mean_logmel([r["path"] for r in test], audio, features))
        labels = np.array([r["label"] == "anomaly" for r in test], dtype=int)
        per_id.append(dict(machine_type=key[0], machine_id=key[1], **id_metrics(labels, scores)))
    return summarize(per_id)
