"""Decode + log-mel throughput for 10 s clips: rcmae (torch) against librosa as a reference.

    python benchmarks/features.py [--clips 64]     (librosa comes with `pip install -e ".[bench]"`)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rcmae.data.audio import load_clip, write_wav
from rcmae.features import LogMel, compute_logmel
from rcmae.sections import AudioConfig, FeatureConfig


def make_clips(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"normal_id_00_{i:08d}.wav"
        write_wav(path, 0.1 * rng.standard_normal(160000), 16000)
        paths.append(path)
    return paths


def bench(name: str, paths: list[Path], featurize) -> None:
    featurize(paths[0])  # warm-up: first-call costs (numba JIT, allocator) are not throughput
    start = time.perf_counter()
    for path in paths:
        featurize(path)
    elapsed = time.perf_counter() - start
    print(f"{name:28s} {len(paths) / elapsed:8.1f} clips/s  ({elapsed / len(paths) * 1000:.1f} ms/clip)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    audio, features = AudioConfig(clip_seconds=10.0), FeatureConfig()
    extractor = LogMel(features)
    with tempfile.TemporaryDirectory() as folder:
        paths = make_clips(Path(folder), args.clips)
        bench("decode only", paths, lambda p: load_clip(p, audio))
        bench("decode + log-mel (torch)", paths,
              lambda p: compute_logmel(load_clip(p, audio)[None], features, extractor=extractor))
        start = time.perf_counter()
        for i in range(0, len(paths), args.batch):
            waves = np.stack([load_clip(p, audio) for p in paths[i:i + args.batch]])
            compute_logmel(waves, features, extractor=extractor)
        elapsed = time.perf_counter() - start
        print(f"{'decode + log-mel, batch ' + str(args.batch):28s} {len(paths) / elapsed:8.1f} clips/s")
        try:
            import librosa
        except ImportError:
            print("librosa not installed: pip install -e '.[bench]' for the reference figure")
            return

        def librosa_logmel(path):
            wave = load_clip(path, audio)
            mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=1024, hop_length=512, n_mels=128,
                                                 fmin=50, fmax=8000, power=2.0)
            return 10 * np.log10(mel + 1e-10)

        bench("decode + log-mel (librosa)", paths, librosa_logmel)


if __name__ == "__main__":
    main()
