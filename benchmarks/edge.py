"""The exported edge detector against the torch path: its folder's size and the time to score one 10 s recording.

A fine-tuned model folder is exported (`rcmae export --format onnx`), then the same 10 s waveform of one of its
machines is scored by `rcmae.edge` (numpy + onnxruntime) and by `rcmae.Detector` (torch), each after a warm-up call;
printed: the median over `--repeats` calls and the largest score difference.

    python benchmarks/edge.py --model runs/main/finetune/model
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rcmae import Detector, edge
from rcmae.export import export_edge


def median_ms(call, repeats: int) -> tuple[float, object]:
    result = call()  # warm-up: sessions, caches, first allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned model folder (FINETUNE_OUT/model)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    detector = Detector.load(args.model)
    machine_type, machine_id = detector.machines[0].split("/")
    wave = np.random.default_rng(0).normal(scale=0.1, size=10 * detector.sample_rate).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        out = export_edge(args.model, Path(folder) / "edge")
        size = {path.name: path.stat().st_size for path in out.iterdir()}
        gateway = edge.load(out)
        edge_ms, edge_result = median_ms(lambda: gateway.score(wave, detector.sample_rate, machine_type, machine_id),
                                         args.repeats)
    torch_ms, torch_result = median_ms(lambda: detector.score(wave, detector.sample_rate, machine_type, machine_id),
                                       args.repeats)
    print(f"model {args.model}: {detector.clip_seconds} s clips, score {detector.method}, "
          f"{len(edge_result.window_scores)} window(s) per 10 s recording")
    print("export: " + ", ".join(f"{name} {value / 2 ** 20:.2f} MiB" for name, value in sorted(size.items()))
          + f"; {sum(size.values()) / 2 ** 20:.2f} MiB in all")
    print(f"one 10 s recording, median of {args.repeats}: edge {edge_ms:.1f} ms, torch {torch_ms:.1f} ms; "
          f"score difference {abs(edge_result.score - torch_result.score):.2e}")


if __name__ == "__main__":
    main()
