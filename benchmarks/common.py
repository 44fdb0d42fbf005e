"""Shared by the benchmarks: a toy-factory data set, its features, and a peak-memory sampler over all processes."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psutil

from rcmae.data.synth import synthesize


def start_ray() -> None:
    """A local 2-CPU Ray, as the machine the figures are quoted for, without progress bars."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    ray.data.DataContext.get_current().enable_progress_bars = False


def toy_data(folder: Path, copies: int = 1) -> Path:
    """The small toy factory, replicated `copies` times under distinct machine-type folders."""
    source = folder / "toy"
    if not (source / "manifest.json").exists():
        synthesize(source, preset="small", seed=0)
    if copies == 1:
        return source / "dev_data"
    root = folder / f"toy_x{copies}"
    if not root.exists():
        for copy in range(copies):
            for type_dir in (source / "dev_data").iterdir():
                shutil.copytree(type_dir, root / f"{type_dir.name}{copy}")
    return root


def toy_features(folder: Path) -> Path:
    """The small toy factory augmented with the tiny preset (factory-mix) on Ray: its feature folder."""
    from rcmae.config import tiny
    from rcmae.distributed.augment_pipeline import run_augment

    run_augment(toy_data(folder), folder / "augment", tiny())
    return folder / "augment" / "features"


class PeakMemory:
    """Peak of the summed RSS of every process on the machine minus the baseline at start (bytes)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _total() -> int:
        total = 0
        for process in psutil.process_iter(["memory_info"]):
            info = process.info.get("memory_info")
            total += info.rss if info else 0
        return total

    def __enter__(self) -> "PeakMemory":
        self.baseline = self._total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total() - self.baseline)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
