"""Does pooling that keeps time hear the faults that change timing? An offline check over finished runs.

For each run folder (`rcmae run` on toy-factory data, whose manifest names every fault's family), the fine-tuned
model encodes the train-normal and test clips; its projected patch tokens (frequency rows x time columns x 32, the
values the patch score reads) are pooled over time in several ways, and each pooling gets one shrunk Gaussian per
machine ID fitted on that ID's train clips (`rcmae.detect.shrunk`). Printed per pooling: the mean AUC over types
and per kind of fault (timing, added sound), beside the run's own `mahalanobis` score and the floor.

    python benchmarks/temporal_stats.py --runs RUN_DIR... --data DATA_DIR...   # DATA: each run's --data
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from kinds import mean_auc, print_table
from rcmae.data.feature_table import META_COLUMNS, machine_keys, stream_rows
from rcmae.detect.encode import TableEncoder, encoded_of
from rcmae.detect.shrunk import ShrunkGaussian
from rcmae.evaluate.families import family_metrics, fault_families


def time_mean(t: np.ndarray) -> np.ndarray:
    return t.mean(axis=2)


def time_std(t: np.ndarray) -> np.ndarray:
    return t.std(axis=2)


def time_change(t: np.ndarray) -> np.ndarray:
    """Mean absolute change between neighbouring time columns: how much each row's token moves."""
    return np.abs(np.diff(t, axis=2)).mean(axis=2)


def time_peak(t: np.ndarray) -> np.ndarray:
    """How far each row's most unusual column sits from the row's mean."""
    return np.abs(t - t.mean(axis=2, keepdims=True)).max(axis=2)


POOLINGS = {
    "mean over time": [time_mean],
    "std over time": [time_std],
    "change over time": [time_change],
    "mean + std": [time_mean, time_std],
    "mean + std + change": [time_mean, time_std, time_change],
    "mean + peak": [time_mean, time_peak],
}


def encode(run: Path, split: str) -> tuple[list[dict], np.ndarray]:
    """(metadata rows, projected patch tokens (N, rows, cols, dims)) of a run's usable clips of `split`."""
    encoder = TableEncoder(run / "finetune" / "model")
    grid = encoder.checkpoint.config.features.grid
    meta, tokens = [], []
    for batch in stream_rows(run / "augment" / "features", META_COLUMNS + ["features"], (split,)):
        table = encoder(batch)
        meta += table.select(META_COLUMNS).to_pylist()
        tokens.append(encoded_of(table, grid).patches)
    return meta, np.concatenate(tokens)


def scores_of(pooling: list, train: tuple[list[dict], np.ndarray], test: tuple[list[dict], np.ndarray]) -> np.ndarray:
    def features(tokens: np.ndarray) -> np.ndarray:
        return np.concatenate([f(tokens).reshape(len(tokens), -1) for f in pooling], axis=1)

    train_keys, test_keys = machine_keys(pa.Table.from_pylist(train[0])), machine_keys(pa.Table.from_pylist(test[0]))
    train_values, test_values = features(train[1]), features(test[1])
    scores = np.full(len(test_keys), np.nan)
    for key in sorted(set(test_keys)):
        fit = ShrunkGaussian.fit(train_values[[i for i, k in enumerate(train_keys) if k == key]])
        mine = [i for i, k in enumerate(test_keys) if k == key]
        scores[mine] = fit.score(test_values[mine])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="each run's data folder, in order")
    args = parser.parse_args()
    results: dict[str, list[dict]] = defaultdict(list)
    for run, data in zip(args.runs, args.data, strict=True):
        train, test = encode(run, "train"), encode(run, "test")
        families = fault_families(data)
        for name, pooling in POOLINGS.items():
            scores = scores_of(pooling, train, test)
            kinds = family_metrics(test[0], scores, families)["per_kind"]
            results[name].append(dict(mean=mean_auc(test[0], scores), **{k: v["auc"] for k, v in kinds.items()}))
        metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
        floor = json.loads((run / "floor" / "metrics.json").read_text())
        for name, found in ((f"run's {metrics['method']}", metrics), ("floor", floor)):
            kinds = found["families"]["per_kind"]
            results[name].append(dict(mean=found["mean"]["auc"], **{k: v["auc"] for k, v in kinds.items()}))
        print(f"done {run}", flush=True)
    print_table(results, "pooling", len(args.runs))


if __name__ == "__main__":
    main()
