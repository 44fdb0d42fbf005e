"""Stage-1 throughput: in-process against Ray Train with 1 and 2 workers (the ratio is Ray's overhead
and its scaling on this machine). Samples/s are clips per second over epochs 2..N (epoch 1 warms up).

    python benchmarks/train.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import start_ray, toy_features
from rcmae.config import tiny
from rcmae.data.feature_table import read_feature_table
from rcmae.models.checkpoint import load_checkpoint
from rcmae.stages import pretrain


def samples_per_second(model_dir: Path, clips: int) -> float:
    history = load_checkpoint(model_dir).meta.history[1:]
    return clips * len(history) / sum(h["seconds"] for h in history)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    start_ray()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        features = toy_features(folder)
        clips = read_feature_table(features, ("train",), columns=["path"]).num_rows
        print(f"stage 1, tiny preset, {clips} train clips, batch {tiny().pretrain.batch_size}, 2 CPUs")
        for name, workers in (("in-process", 0), ("Ray Train, 1 worker", 1), ("Ray Train, 2 workers", 2)):
            config = tiny().override({"pretrain.epochs": args.epochs, "scale.num_workers": workers})
            started = time.perf_counter()
            model = pretrain(config, features, folder / f"run_{workers}")
            wall = time.perf_counter() - started
            print(f"{name:24s} {samples_per_second(model, clips):8.1f} samples/s   "
                  f"({wall:.0f} s wall for {args.epochs} epochs, start-up included)")


if __name__ == "__main__":
    main()
