"""Driver memory and time at paper feature size (128 x 320 log-mels, K = 2 variants) as the data grows.

For each N it writes N synthetic feature rows, then in a fresh driver process: stage setup (variant check,
normaliser, class list), one stage-1 epoch of a tiny model on Ray Train with 2 workers, and detector fitting
(Ray Data actors + per-ID groupby). Prints the driver's peak RSS, the object store's peak use and seconds
per 1,000 clips of each step. Driver memory should stay flat as N grows.

    python benchmarks/scale.py [--clips 500 1000 2000 4000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from rcmae.data.feature_table import write_synthetic_features


class ObjectStorePeak:
    """Peak object-store bytes in use, sampled from Ray's resource view."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def _run(self) -> None:
        import ray

        while not self._stop.is_set():
            total = ray.cluster_resources().get("object_store_memory", 0)
            free = ray.available_resources().get("object_store_memory", total)
            self.peak = max(self.peak, total - free)
            time.sleep(self.interval)

    def __enter__(self) -> "ObjectStorePeak":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(features: Path, folder: Path) -> dict:
    """One driver process: the figures of stage setup, one stage-1 epoch and detector fitting."""
    import ray

    from rcmae.config import tiny
    from rcmae.data.classes import train_classes
    from rcmae.distributed.inference import fit_detector_ray
    from rcmae.distributed.train import pretrain_ray
    from rcmae.models.checkpoint import load_checkpoint, save_checkpoint
    from rcmae.train.setup import pretrain_start

    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    ray.data.DataContext.get_current().enable_progress_bars = False
    config = tiny().override({"features.n_frames": 320, "features.patch_freq": 8, "features.patch_time": 10,
                              "pretrain.epochs": 1, "scale.num_workers": 2, "scale.cpus_per_worker": 0.5})
    figures = {}
    with ObjectStorePeak() as store:
        started = time.perf_counter()
        pretrain_start(config.augment, features)
        _, classes = train_classes(features, "id")
        figures["setup"] = dict(seconds=time.perf_counter() - started, driver_peak_rss_mib=peak_rss_mib())
        started = time.perf_counter()
        pretrained = pretrain_ray(config, features, folder / "pretrain")
        figures["epoch"] = dict(seconds=time.perf_counter() - started, driver_peak_rss_mib=peak_rss_mib())
        checkpoint = load_checkpoint(pretrained)  # an untrained ID head is enough to time the detector fit
        model_dir = save_checkpoint(folder / "detector_model", checkpoint.model.with_classifier(len(classes)),
                                    config, replace(checkpoint.meta, classes=classes))
        started = time.perf_counter()
        fit_detector_ray(model_dir, features, classes, config.score, config.scale)
        figures["detector"] = dict(seconds=time.perf_counter() - started, driver_peak_rss_mib=peak_rss_mib())
    figures["object_store_peak_mib"] = store.peak / 2**20
    ray.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # FEATURES WORK_DIR, in the child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    print("paper-size features (128 x 320, K = 2), tiny model, Ray Train 2 workers, 2 CPUs")
    print(f"{'clips':>6} {'step':>9} {'driver peak RSS MiB':>20} {'s / 1,000 clips':>16} {'object store peak MiB':>22}")
    for clips in args.clips:
        with tempfile.TemporaryDirectory() as folder:
            features = write_synthetic_features(Path(folder) / "features", clips)
            done = subprocess.run([sys.executable, __file__, "--measure", str(features), folder],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"N={clips}: measurement failed\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
        for step in ("setup", "epoch", "detector"):
            row = figures[step]
            print(f"{clips:>6} {step:>9} {row['driver_peak_rss_mib']:>20.0f} {1000 * row['seconds'] / clips:>16.1f} "
                  f"{figures['object_store_peak_mib']:>22.0f}", flush=True)


if __name__ == "__main__":
    main()
