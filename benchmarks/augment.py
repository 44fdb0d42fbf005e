"""Augmentation throughput: the Ray Data pipeline with 1 and 2 actors against a plain sequential loop
over the same augmenter (factory-mix and a tiny AudioLDM), and peak memory at 1x and 4x data size.

    python benchmarks/augment.py [--clips 48] [--audioldm-clips 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc

from common import PeakMemory, start_ray, toy_data
from rcmae.augment.featurize import Featurizer, read_batch
from rcmae.config import tiny
from rcmae.data.layout import index_clips
from rcmae.distributed.augment_pipeline import augmentation, run_augment


def sequential(data: Path, config, clips: int) -> float:
    table = index_clips(data).table
    train = table.filter(pc.equal(table["split"], "train")).slice(0, clips)
    featurizer = Featurizer(config.features, config.audio.sample_rate,
                            augmentation(config.augment, config.audio.sample_rate))
    started = time.perf_counter()
    for start in range(0, train.num_rows, config.augment.batch_size):
        featurizer(read_batch(train.slice(start, config.augment.batch_size).to_pandas(), config.audio))
    return train.num_rows / (time.perf_counter() - started)


def pipeline(data: Path, out: Path, config, clips: int, actors: int) -> tuple[float, float]:
    config = config.override({"augment.num_actors": actors})
    with PeakMemory() as memory:
        started = time.perf_counter()
        run_augment(data, out, config, limit=clips)
        elapsed = time.perf_counter() - started
    return clips / elapsed, memory.peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--audioldm-clips", type=int, default=12)
    args = parser.parse_args()
    from rcmae.augment.tiny import save_tiny

    start_ray()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train_only = toy_data(folder) / "fan" / "train"  # train clips: every one is augmented
        tiny_model = save_tiny(folder / "tiny_audioldm")
        setups = [("factory-mix", tiny(), args.clips),
                  ("tiny AudioLDM (S 10-50)", tiny().override({"augment.augmenter": "audioldm",
                                                                "augment.model": str(tiny_model)}),
                   args.audioldm_clips)]
        print(f"{'augmenter':26s} {'sequential':>12s} {'1 actor':>12s} {'2 actors':>12s}   clips/s "
              f"(x{tiny().augment.variants} variants, 2 s clips, 2 CPUs)")
        for name, config, clips in setups:
            seq = sequential(train_only, config, clips)
            one, _ = pipeline(train_only, folder / f"{name}_1", config, clips, 1)
            two, _ = pipeline(train_only, folder / f"{name}_2", config, clips, 2)
            print(f"{name:26s} {seq:12.2f} {one:12.2f} {two:12.2f}")
        for copies in (1, 4):
            data = toy_data(folder, copies)
            count = index_clips(data).table.num_rows
            rate, peak = pipeline(data, folder / f"mem_x{copies}", tiny(), count, 2)
            print(f"factory-mix, {copies}x data ({count} clips): {rate:.1f} clips/s, peak memory +{peak:.0f} MiB")


if __name__ == "__main__":
    main()
