"""Would a finer temporal front end hear the faults that change timing? An offline check on toy-factory data.

Each clip's log-mel at hop 128 (125 frames/s, 32 bands in 8 groups) gives each group's loudness envelope; the
magnitude spectrum of the envelope (mean removed) up to 62 Hz, log-compressed and averaged into bins, is the
clip's modulation spectrum: strokes that go missing, come extra or drift, and modulation at a shaft rate, move
its peaks. One shrunk Gaussian per machine ID on its train-normal clips (as the floor), scored on the test clips;
printed per data set: mean AUC over types and per kind of fault, beside the floor on the same clips.

    python benchmarks/modulation.py --data DATA_DIR... [--clip-seconds 2]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from kinds import mean_auc, print_table
from rcmae.data.audio import load_clip
from rcmae.data.feature_table import machine_key
from rcmae.data.layout import index_clips
from rcmae.detect.floor import clip_statistics
from rcmae.detect.shrunk import ShrunkGaussian
from rcmae.evaluate.families import family_metrics, fault_families
from rcmae.features import LogMel
from rcmae.sections import AudioConfig, FeatureConfig

FINE = FeatureConfig(n_fft=512, hop_length=128, n_mels=32, n_frames=10)  # 125 frames/s at 16 kHz
GROUPS, BINS, MAX_HZ = 8, 24, 62.0


def modulation_spectrum(specs: np.ndarray, frame_rate: float) -> np.ndarray:
    """(N, F, T) log-mels -> (N, GROUPS * BINS) log envelope spectra up to MAX_HZ."""
    envelopes = np.stack([part.mean(axis=1) for part in np.array_split(specs, GROUPS, axis=1)], axis=1)
    envelopes = envelopes - envelopes.mean(axis=2, keepdims=True)
    spectrum = np.abs(np.fft.rfft(envelopes, axis=2))
    freqs = np.fft.rfftfreq(envelopes.shape[2], 1 / frame_rate)
    edges = np.linspace(0.5, MAX_HZ, BINS + 1)
    binned = [spectrum[..., (freqs >= lo) & (freqs < hi)].mean(axis=2) for lo, hi in zip(edges, edges[1:])]
    return np.log1p(np.stack(binned, axis=2)).reshape(len(specs), -1)


def per_id_scores(values: np.ndarray, rows: list[dict]) -> np.ndarray:
    keys = [machine_key(r["machine_type"], r["machine_id"]) for r in rows]
    train = np.array([r["split"] == "train" for r in rows])
    scores = np.full(len(rows), np.nan)
    for key in sorted(set(keys)):
        mine = np.array([k == key for k in keys])
        fit = ShrunkGaussian.fit(values[mine & train])
        scores[mine & ~train] = fit.score(values[mine & ~train])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--clip-seconds", type=float, default=None, help="crop/pad to this (default: whole clips)")
    args = parser.parse_args()
    audio = AudioConfig(clip_seconds=args.clip_seconds)
    coarse, fine = LogMel(FeatureConfig(), audio.sample_rate), LogMel(FINE, audio.sample_rate)
    results: dict[str, list[dict]] = defaultdict(list)
    for data in args.data:
        rows = index_clips(data, lenient=True).table.to_pylist()
        waves = torch.from_numpy(np.stack([load_clip(r["path"], audio) for r in rows]))
        with torch.no_grad():
            coarse_specs, fine_specs = coarse(waves).numpy(), fine(waves).numpy()
        families = fault_families(data)
        test = [r for r in rows if r["split"] == "test"]
        keep = np.array([r["split"] == "test" for r in rows])
        features = {"floor (log-mel mean and std)": clip_statistics(coarse_specs),
                    "modulation spectrum": modulation_spectrum(fine_specs, audio.sample_rate / FINE.hop_length)}
        features["floor + modulation"] = np.concatenate(list(features.values()), axis=1)
        for name, values in features.items():
            scores = per_id_scores(values, rows)[keep]
            kinds = family_metrics(test, scores, families)["per_kind"]
            results[name].append(dict(mean=mean_auc(test, scores), **{k: v["auc"] for k, v in kinds.items()}))
        print(f"done {data}", flush=True)
    print_table(results, "features", len(args.data))


if __name__ == "__main__":
    main()
