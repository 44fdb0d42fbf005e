"""Evaluate a fine-tuned RC-MAE checkpoint on a DCASE-layout test split, and score single recordings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rcmae.config import SCORE_METHODS, Config
from rcmae.data.layout import SCHEMA as CLIP_SCHEMA
from rcmae.data.layout import index_clips, parse_clip_name
from rcmae.evaluate.report_files import write_evaluation
from rcmae.evaluate.scoring import Detector, anomaly_scores, encode_all
from rcmae.featurize import featurize_table
from rcmae.train.checkpoint import Checkpoint, load_checkpoint, load_detector_arrays
from rcmae.train.data import FeatureSet


def _detector(checkpoint: Checkpoint) -> Detector:
    if "detector" not in checkpoint.meta:
        raise ValueError("checkpoint has no fitted detector: pass the model folder written by `rcmae finetune`")
    return Detector.from_arrays(load_detector_arrays(checkpoint.folder), checkpoint.meta["detector"]["thresholds"])


def score_feature_set(checkpoint: Checkpoint, features: FeatureSet, methods=SCORE_METHODS) -> dict[str, np.ndarray]:
    encoded = encode_all(checkpoint.model, features.specs, checkpoint.normalizer,
                         device=next(checkpoint.model.parameters()).device)
    detector = _detector(checkpoint)
    return {m: anomaly_scores(m, encoded, features.keys(), checkpoint.classes, detector)
            for m in methods}


def decide(checkpoint: Checkpoint, method: str, keys: list[str], scores: np.ndarray) -> np.ndarray:
    thresholds = checkpoint.meta["detector"]["thresholds"][method]
    return np.array([int(s > thresholds[k]) for k, s in zip(keys, scores)])


def featurize_or_report(clips: pa.Table, config: Config) -> FeatureSet:
    """Log-mels of the clips; unreadable clips are reported on stderr and left out."""
    table = featurize_table(clips, config)
    failed = table.filter(pc.invert(pc.is_null(table["error"])))
    for reason in failed["error"].to_pylist():
        print(f"skipped: {reason}", file=sys.stderr)
    usable = table.filter(pc.is_null(table["error"]))
    if usable.num_rows == 0:
        raise ValueError("no clip could be read")
    return FeatureSet.from_table(usable)


def test_feature_set(data_dir: str | Path, config: Config) -> FeatureSet:
    """Features of every readable test clip under `data_dir` (names outside the grammar are reported)."""
    index = index_clips(data_dir, lenient=True)
    for _, reason in index.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    clips = index.table.filter(pc.equal(index.table["split"], "test"))
    if clips.num_rows == 0:
        raise ValueError(f"{data_dir}: no test clips to evaluate")
    return featurize_or_report(clips, config)


def evaluate_checkpoint(checkpoint_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                        method: str | None = None) -> dict:
    """Scores every test clip under `data_dir`, writes DCASE CSVs and metrics.json to `out_dir`.
    metrics.json also holds `methods`: the mean AUC/pAUC of every score method, for comparison."""
    checkpoint = load_checkpoint(checkpoint_dir)
    method = method or checkpoint.config.score.method
    features = test_feature_set(data_dir, checkpoint.config)
    all_scores = score_feature_set(checkpoint, features)
    comparison = {}
    for other, scores in all_scores.items():
        if other != method:
            comparison[other] = write_evaluation(Path(out_dir) / "other_methods" / other, features.meta, scores,
                                                 decide(checkpoint, other, features.keys(), scores),
                                                 checkpoint.config.score.max_fpr)["mean"]
    scores = all_scores[method]
    metrics = write_evaluation(out_dir, features.meta, scores, decide(checkpoint, method, features.keys(), scores),
                               checkpoint.config.score.max_fpr, extra={"method": method})
    metrics["methods"] = {method: metrics["mean"], **comparison}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None) -> list[dict]:
    """file, machine_type, machine_id, score, decision for each recording. The machine comes from the
    DCASE file name, or from `machine_type` / `machine_id` for other names."""
    checkpoint = load_checkpoint(checkpoint_dir)
    method = method or checkpoint.config.score.method
    rows = []
    for path in paths:
        if machine_type and machine_id:
            row = dict(path=str(path), file_name=Path(path).name, machine_type=machine_type,
                       machine_id=machine_id, split="test", label="unknown", domain="unknown", attributes="")
        else:
            row = parse_clip_name(Path(path))
        rows.append(row)
    features = featurize_or_report(pa.Table.from_pylist(rows, schema=CLIP_SCHEMA), checkpoint.config)
    scores = score_feature_set(checkpoint, features, methods=(method,))[method]
    decisions = decide(checkpoint, method, features.keys(), scores)
    return [dict(file=m["path"], machine_type=m["machine_type"], machine_id=m["machine_id"], score=float(s),
                 decision=int(d)) for m, s, d in zip(features.meta, scores, decisions)]
