"""How the log-mel profiles' Gaussians are fitted: each machine ID alone with the floor's fixed shrinkage, or with a
covariance its machine type shares, shrunk by the Ledoit-Wolf rule (the detector's `stats` and `rhythm`).

No model: for each toy factory and seed, the clips' log-mels (the preset `rcmae run` would use), the floor's
statistics and the rhythm, then per ID a Gaussian fitted each way on the train clips and its AUC / pAUC on the test
clips (mean over types, mean over seeds). The toy factories are those of `benchmarks/families.py`, synthesised
into --out (or reused from it).

    python benchmarks/profiles.py --out /tmp/w/fam --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np

from families import SETS
from rcmae.config import cpu, tiny
from rcmae.data.audio import load_clip
from rcmae.data.layout import index_clips
from rcmae.detect.floor import clip_statistics
from rcmae.detect.rhythm import envelope_autocorrelation
from rcmae.detect.shrunk import ShrunkGaussian
from rcmae.evaluate.metrics import id_metrics
from rcmae.features import Normalizer, compute_logmel

CONFIGS = {"small": tiny(), "hard": tiny().override({"audio.clip_seconds": 4.0, "features.n_frames": 128}),
           "long": cpu()}
FITS = ("own, fixed shrinkage 0.1 (the floor's)", "shared by the type, Ledoit-Wolf")


def profiles(data: Path, name: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The clips and, per profile, every clip's values (statistics of the normalised log-mel, as the detector)."""
    config = CONFIGS[name]
    rows = index_clips(data).table.to_pylist()
    specs = compute_logmel(np.stack([load_clip(r["path"], config.audio) for r in rows]), config.features,
                           config.audio.sample_rate)
    train = np.array([r["split"] == "train" for r in rows])
    normalizer = Normalizer.fit(specs[train])
    return rows, {"stats": clip_statistics(normalizer(specs)), "rhythm": envelope_autocorrelation(specs)}


def scores_of(values: np.ndarray, keys: np.ndarray, train: np.ndarray, fit: str) -> np.ndarray:
    scores = np.full(len(keys), np.nan)
    for key in sorted(set(keys)):
        own = train & (keys == key)
        if fit == FITS[0]:
            gaussian = ShrunkGaussian.fit(values[own])
        else:
            mates = [values[train & (keys == k)] - values[train & (keys == k)].mean(axis=0) for k in sorted(set(keys))
                     if k != key and k.split("/")[0] == key.split("/")[0]]
            gaussian = ShrunkGaussian.fit_shared(values[own], np.concatenate(mates) if mates else None)
        scores[~train & (keys == key)] = gaussian.score(values[~train & (keys == key)])
    return scores


def mean_over_types(rows: list[dict], scores: np.ndarray, train: np.ndarray) -> np.ndarray:
    per_type: dict[str, list[tuple[float, float]]] = {}
    keys = np.array([f"{r['machine_type']}/{r['machine_id']}" for r in rows])
    for key in sorted(set(keys)):
        test = ~train & (keys == key)
        labels = np.array([rows[i]["label"] == "anomaly" for i in np.flatnonzero(test)], dtype=int)
        metrics = id_metrics(labels, scores[test])
        per_type.setdefault(key.split("/")[0], []).append((metrics["auc"], metrics["pauc"]))
    return np.mean([np.mean(values, axis=0) for values in per_type.values()], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the toy factories (families.py's)")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["small", "hard", "long"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    print("| data | profile | " + " | ".join(FITS) + " |\n|---|---|" + "---|" * len(FITS))
    for name in args.sets:
        results: dict[tuple[str, str], list[np.ndarray]] = {}
        for seed in args.seeds:
            data = args.out / name / f"data_seed_{seed}"
            if not (data / "manifest.json").exists():
                subprocess.run(["rcmae", "synth", "--out", str(data), "--seed", str(seed), *SETS[name][0]],
                               check=True, stdout=subprocess.DEVNULL)
            rows, values = profiles(data / "dev_data", name)
            keys = np.array([f"{r['machine_type']}/{r['machine_id']}" for r in rows])
            train = np.array([r["split"] == "train" for r in rows])
            for profile, matrix in values.items():
                for fit in FITS:
                    results.setdefault((profile, fit), []).append(
                        mean_over_types(rows, scores_of(matrix, keys, train, fit), train))
        for profile in ("stats", "rhythm"):
            cells = [np.mean(results[(profile, fit)], axis=0) for fit in FITS]
            print(f"| {name} ({len(args.seeds)} seeds) | {profile} | "
                  + " | ".join(f"{auc:.3f} / {pauc:.3f}" for auc, pauc in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
