"""Evaluate a fine-tuned RC-MAE on a test split, and score single recordings.

Scoring produces a small table (clip metadata and one `score_<method>` column per score method); everything
here works from that table, whether it was scored in-process (`rcmae.detect.apply`) or by Ray Data batch
inference (`rcmae.distributed.inference`). Test clips come from the feature Parquet that `rcmae augment`
wrote (`feature_test_split`) or are read from a data folder (`data_test_split`), a batch at a time.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rcmae.augment.featurize import featurize_table
from rcmae.config import Config
from rcmae.data.feature_table import META_COLUMNS, machine_keys, stream_rows
from rcmae.data.layout import SCHEMA as CLIP_SCHEMA
from rcmae.data.layout import LayoutError, index_clips, parse_clip_name
from rcmae.detect.apply import score_rows
from rcmae.evaluate.report_files import write_evaluation
from rcmae.models.checkpoint import read_meta
from rcmae.registry import SCORES


def featurized_rows(clips: pa.Table, config: Config, batch_rows: int = 64,
                    failures: list[dict] | None = None) -> Iterator[pa.Table]:
    """Log-mels of the clips a batch at a time; unreadable clips are left out and reported: added to
    `failures` (file, reason) when given, else printed on stderr."""
    for start in range(0, clips.num_rows, batch_rows):
        table = featurize_table(clips.slice(start, batch_rows), config)
        bad = table.filter(pc.invert(pc.is_null(table["error"])))
        for path, reason in zip(bad["path"].to_pylist(), bad["error"].to_pylist()):
            if failures is None:
                print(f"skipped: {reason}", file=sys.stderr)
            else:
                failures.append(dict(file=path, reason=reason))
        usable = table.filter(pc.is_null(table["error"]))
        if usable.num_rows:
            yield usable


def data_test_split(data_dir: str | Path, config: Config, machine_type: str | None = None) -> Iterator[pa.Table]:
    """Features of every readable test clip (of one machine type when given) under `data_dir` (names outside
    the grammar are reported)."""
    index = index_clips(data_dir, lenient=True)
    for _, reason in index.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    clips = index.table.filter(pc.field("split") == "test")
    if clips.num_rows == 0:
        raise ValueError(f"{data_dir}: no test clips to evaluate")
    if machine_type is not None:
        clips = clips.filter(pc.field("machine_type") == machine_type)
    return featurized_rows(clips, config)


def feature_test_split(features_dir: str | Path, machine_type: str | None = None,
                            batch_rows: int = 256) -> Iterator[pa.Table]:
    """The test clips' log-mels (of one machine type when given) that the augmentation pipeline wrote."""
    only_type = None if machine_type is None else pc.field("machine_type") == machine_type
    return stream_rows(features_dir, META_COLUMNS + ["features"], ("test",), extra_filter=only_type,
                       batch_rows=batch_rows)


def known_rows(scored: pa.Table) -> pa.Table:
    """Rows whose machine the model knows; the others are reported and left out."""
    unknown = pc.is_null(scored[f"score_{next(iter(SCORES))}"])
    for key in sorted(set(machine_keys(scored.filter(unknown)))):
        print(f"skipped: machine {key} was not seen in training", file=sys.stderr)
    return scored.filter(pc.invert(unknown))


def decisions(scored: pa.Table, method: str, thresholds: dict[str, dict[str, float]]) -> np.ndarray:
    per_key = thresholds[method]
    scores = scored[f"score_{method}"].to_numpy(zero_copy_only=False)
    return np.array([int(s > per_key[k]) for k, s in zip(machine_keys(scored), scores)])


def write_scored(scored: pa.Table, model_dir: str | Path, out_dir: str | Path, method: str | None = None) -> dict:
    """DCASE CSVs and metrics.json of `method` (the model's configured one by default) in `out_dir`, the
    other methods' under `out_dir/other_methods/`; metrics.json's `methods` compares their means."""
    meta = read_meta(model_dir)
    score_config = Config.from_dict(meta["config"]).score
    method = method or score_config.method
    thresholds = meta["detector"]["thresholds"]
    scored = known_rows(scored)
    if scored.num_rows == 0:
        raise ValueError("no test clip of a machine the model knows")
    rows = scored.select(META_COLUMNS).to_pylist()
    comparison = {}
    for other in SCORES:
        if other != method:
            comparison[other] = write_evaluation(
                Path(out_dir) / "other_methods" / other, rows, scored[f"score_{other}"].to_numpy(zero_copy_only=False),
                decisions(scored, other, thresholds), score_config.max_fpr)["mean"]
    metrics = write_evaluation(out_dir, rows, scored[f"score_{method}"].to_numpy(zero_copy_only=False),
                               decisions(scored, method, thresholds), score_config.max_fpr, extra={"method": method})
    metrics["methods"] = {method: metrics["mean"], **comparison}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_checkpoint(checkpoint_dir: str | Path, data_dir: str | Path | None, out_dir: str | Path,
                        method: str | None = None, features_dir: str | Path | None = None) -> dict:
    """In-process: scores the test clips (from `features_dir`'s Parquet, else read from `data_dir`) and
    writes the DCASE CSVs and metrics.json to `out_dir`."""
    if features_dir is not None:
        rows = feature_test_split(features_dir)
    elif data_dir is not None:
        rows = data_test_split(data_dir, Config.from_dict(read_meta(checkpoint_dir)["config"]))
    else:
        raise ValueError("evaluate needs test clips: a data folder or a feature folder")
    return write_scored(score_rows(checkpoint_dir, rows), checkpoint_dir, out_dir, method)


@dataclass
class ScoredRecordings:
    rows: list[dict]      # file, machine_type, machine_id, score, decision: one per scored recording
    failures: list[dict]  # file, reason: one per recording that could not be scored


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None) -> ScoredRecordings:
    """Scores every readable recording of a machine the model knows; the others are listed with their reason
    (not found, name outside the DCASE grammar, unreadable audio, unknown machine). The machine comes from the
    DCASE file name, or from `machine_type` / `machine_id` (a number, zero-padded as DCASE's) for other names."""
    meta = read_meta(checkpoint_dir)
    config = Config.from_dict(meta["config"])
    method = method or config.score.method
    if machine_id is not None and machine_id.isdigit():
        machine_id = f"{int(machine_id):02d}"
    clips, failures = [], []
    for path in paths:
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
    readable = list(featurized_rows(pa.Table.from_pylist(clips, schema=CLIP_SCHEMA), config, failures=failures))
    rows = []
    if readable:
        scored = score_rows(checkpoint_dir, readable)
        unknown = pc.is_null(scored[f"score_{method}"])
        known_keys = ", ".join(meta.get("classes", []))
        failures += [dict(file=p, reason=f"unknown machine {k} (this model knows {known_keys})")
                     for p, k in zip(scored.filter(unknown)["path"].to_pylist(), machine_keys(scored.filter(unknown)))]
        scored = scored.filter(pc.invert(unknown))
        flags = decisions(scored, method, meta["detector"]["thresholds"])
        rows = [dict(file=m["path"], machine_type=m["machine_type"], machine_id=m["machine_id"], score=float(s),
                     decision=int(d))
                for m, s, d in zip(scored.select(META_COLUMNS).to_pylist(), scored[f"score_{method}"].to_pylist(),
                                   flags)]
    return ScoredRecordings(rows, failures)
