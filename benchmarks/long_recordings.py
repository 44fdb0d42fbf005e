"""Whole long recordings: how a recording's score from its windows (max, mean) hears a 2 s fault in a 60 s
recording, against what a centre crop (the old `rcmae score`) heard.

Each recording is 60 s of one machine's train-normal clips end to end (a new order per recording) with one test
clip spliced in, either in the middle (at 30 s) or in the first 5 s (at 2 s): an anomalous test clip makes a
faulty recording, a normal test clip a normal one, so the splice itself is no cue. AUC per machine ID over its
faulty and normal recordings, averaged per machine type, then over types.

    python benchmarks/long_recordings.py --model runs/main/finetune/model --data runs/main/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcmae import Detector
from rcmae.data.audio import load_clip
from rcmae.data.layout import index_clips
from rcmae.sections import AudioConfig

SECONDS = 60
SPLICE_AT = {"middle": 30.0, "first 5 s": 2.0}


def recording(normals: list[np.ndarray], spliced: np.ndarray, at_s: float, rate: int,
              rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(len(normals))
    wave = np.concatenate([normals[i] for i in np.resize(order, SECONDS * rate // len(normals[0]) + 1)])
    wave = wave[:SECONDS * rate].copy()
    start = int(at_s * rate)
    wave[start:start + len(spliced)] = spliced
    return wave


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned model folder")
    parser.add_argument("--data", type=Path, required=True, help="the toy factory it was trained on")
    args = parser.parse_args()
    detector = Detector.load(args.model)
    rate = detector.sample_rate
    audio = AudioConfig(sample_rate=rate, clip_seconds=None)
    table = index_clips(args.data).table.to_pylist()
    rng = np.random.default_rng(0)
    aucs: dict[str, dict[str, dict[str, list[float]]]] = {}
    started, windows = time.perf_counter(), 0
    for key in detector.machines:
        machine_type, machine_id = key.split("/")
        mine = [r for r in table if (r["machine_type"], r["machine_id"]) == (machine_type, machine_id)]
        normals = [load_clip(r["path"], audio) for r in mine if r["split"] == "train"]
        tests = [(r["label"], load_clip(r["path"], audio)) for r in mine if r["split"] == "test"]
        for position, at_s in SPLICE_AT.items():
            labels, scores = [], {"max": [], "mean": [], "centre crop": []}
            for label, clip in tests:
                result = detector.score(recording(normals, clip, at_s, rate, rng), rate, machine_type, machine_id)
                values, starts = np.array(result.window_scores), np.array(result.window_starts_s)
                windows += len(values)
                labels.append(int(label == "anomaly"))
                scores["max"].append(values.max())
                scores["mean"].append(values.mean())
                scores["centre crop"].append(values[np.argmin(np.abs(starts - (SECONDS / 2 - len(clip) / rate / 2)))])
            for name, values in scores.items():
                aucs.setdefault(position, {}).setdefault(name, {}).setdefault(machine_type, []).append(
                    roc_auc_score(labels, values))
    seconds = time.perf_counter() - started
    print(f"{len(detector.machines)} machine IDs, {windows} windows scored in {seconds:.0f} s "
          f"({windows / seconds:.0f} windows/s)")
    print("| fault spliced | " + " | ".join(next(iter(aucs.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(aucs.values()))))
    for position, by_name in aucs.items():
        means = [np.mean([np.mean(v) for v in per_type.values()]) for per_type in by_name.values()]
        print(f"| {position} | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    main()
