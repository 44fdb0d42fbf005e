"""Which fusion of the model's scores: candidate rules, fixed in this file, on the runs `benchmarks/families.py` made.

No retraining: for each run folder the detector is fitted anew on the run's train split (every single score
calibrated on held-out train clips, as `rcmae finetune` does), the test split is encoded once, and each candidate
is the mean or the largest of its members' standardised log-scores (`rcmae.detect.fusions.standardised`). Printed
per data set: mean AUC / pAUC over types and AUC per kind of fault, mean over seeds, beside the floor the run wrote.
The candidates are few and named before looking, so the table informs the choice of `fused` without being a
search over test labels. With more than one set, a last table gives each candidate's margin over the floor on each
set (mean AUC / pAUC) and its worst: the rule `fused` takes is the one whose worst margin is largest.

    python benchmarks/fusion.py --out runs/families                 # every set and seed found there
    python benchmarks/fusion.py --out runs/families --sets small --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from rcmae.data.classes import ClipClasses
from rcmae.data.feature_table import META_COLUMNS, machine_keys, stream_rows
from rcmae.detect.apply import fit_from_rows
from rcmae.detect.detector import Encoded, anomaly_scores
from rcmae.detect.encode import TableEncoder, encoded_of
from rcmae.detect.fusions import FUSIONS, standardised
from rcmae.evaluate.families import family_metrics, fault_families
from rcmae.evaluate.metrics import id_metrics, summarize
from rcmae.models.checkpoint import read_meta
from rcmae.registry import SCORES

CANDIDATES = {  # name -> (members, rule)
    "stats": (("stats",), "mean"),
    "mahalanobis": (("mahalanobis",), "mean"),
    "stats+mahalanobis": (("stats", "mahalanobis"), "mean"),
    "stats+mahalanobis+patch": (("stats", "mahalanobis", "patch"), "mean"),
    "stats+mahalanobis+rhythm": (("stats", "mahalanobis", "rhythm"), "mean"),
    "stats+mahalanobis+patch+rhythm": (("stats", "mahalanobis", "patch", "rhythm"), "mean"),
    "stats+knn": (("stats", "knn"), "mean"),
    "stats+mahalanobis+knn": (("stats", "mahalanobis", "knn"), "mean"),
    "max(stats,mahalanobis)": (("stats", "mahalanobis"), "max"),
    "max(stats,mahalanobis,rhythm)": (("stats", "mahalanobis", "rhythm"), "max"),
    "max(stats,mahalanobis,patch,rhythm)": (("stats", "mahalanobis", "patch", "rhythm"), "max"),
    "max(stats,rhythm)": (("stats", "rhythm"), "max"),
    "max(stats,patch,rhythm)": (("stats", "patch", "rhythm"), "max"),
    **{f"registered {name}": (fusion.members, fusion.rule) for name, fusion in FUSIONS.items()},
}


def standardised_scores(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The run's test rows and each single score's standardised log-scores of them (a detector fitted anew)."""
    model_dir, features = folder / "finetune" / "model", folder / "augment" / "features"
    meta = read_meta(model_dir)
    detector = fit_from_rows(model_dir, stream_rows(features, META_COLUMNS + ["features"], ("train",)),
                             meta.classes, meta.made_with().score)
    encoder = TableEncoder(model_dir)
    rows, parts = [], []
    for table in stream_rows(features, META_COLUMNS + ["features"], ("test",)):
        encoded = encoder(table)
        keys = machine_keys(encoded)
        known = [i for i, key in enumerate(keys) if key in detector.centroids]
        encoded = encoded.take(known)
        rows += encoded.select(META_COLUMNS).to_pylist()
        parts.append(encoded_of(encoded, meta.made_with().features.grid))
    keys = [f"{row['machine_type']}/{row['machine_id']}" for row in rows]
    encoded = Encoded(*(np.concatenate([getattr(part, f.name) for part in parts]) for f in dataclasses.fields(Encoded)))
    singles = sorted({member for members, _ in CANDIDATES.values() for member in members})
    clips = ClipClasses.of_machines(meta.classes, keys)
    return rows, {method: standardised(method, anomaly_scores(method, encoded, keys, clips, detector), keys, detector)
                  for method in singles}


def evaluate(rows: list[dict], scores: np.ndarray, families: dict[str, str]) -> dict:
    by_id: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        by_id.setdefault((row["machine_type"], row["machine_id"]), []).append(i)
    per_id = []
    for (machine_type, machine_id), idx in sorted(by_id.items()):
        labels = np.array([rows[i]["label"] == "anomaly" for i in idx], dtype=int)
        if 0 < labels.sum() < len(labels):
            per_id.append(dict(machine_type=machine_type, machine_id=machine_id, **id_metrics(labels, scores[idx])))
    kinds = family_metrics(rows, scores, families)["per_kind"]
    return dict(summarize(per_id).mean, **{kind: values["auc"] for kind, values in kinds.items()})


FLOOR = "floor (the run's reference)"


def floor_result(folder: Path) -> dict:
    """The floor's mean AUC / pAUC and AUC per fault kind, as the run wrote them."""
    floor = json.loads((folder / "floor" / "metrics.json").read_text())
    return dict(floor["mean"], **{kind: values["auc"] for kind, values in floor["families"]["per_kind"].items()})


def print_table(title: str, first: str, results: dict[str, list[dict]]) -> None:
    """One markdown row per entry: its mean over seeds of AUC, pAUC and AUC per kind of fault."""
    print(f"### {title}\n")
    print(f"| {first} | AUC | pAUC | added-sound AUC | timing AUC |\n|---|---|---|---|---|")
    for label, runs in results.items():
        cells = [np.mean([run.get(k, np.nan) for run in runs]) for k in ("auc", "pauc", "added-sound", "timing")]
        print(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print(flush=True)


def margin(runs: list[dict], floors: list[dict]) -> tuple[float, float]:
    """Mean AUC and pAUC over seeds above the floor's."""
    return tuple(float(np.mean([run[k] for run in runs]) - np.mean([f[k] for f in floors])) for k in ("auc", "pauc"))


def print_worst_cases(by_set: dict[str, dict[str, list[dict]]]) -> None:
    """Each candidate's margins over the floor per set and the smallest of them, the largest worst case first."""
    names = list(by_set)
    margins = {candidate: [m for name in names for m in margin(by_set[name][candidate], by_set[name][FLOOR])]
               for candidate in CANDIDATES}
    print("### margin over the floor (AUC / pAUC; mean over seeds)\n")
    print("| score | " + " | ".join(names) + " | worst |")
    print("|---" * (len(names) + 2) + "|")
    for candidate, values in sorted(margins.items(), key=lambda item: -min(item[1])):
        cells = [f"{values[2 * i]:+.3f} / {values[2 * i + 1]:+.3f}" for i in range(len(names))]
        print(f"| {candidate} | " + " | ".join(cells) + f" | {min(values):+.3f} |")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder benchmarks/families.py wrote")
    parser.add_argument("--sets", nargs="+", default=["small", "hard", "long"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    assert all(member in SCORES for members, _ in CANDIDATES.values() for member in members)
    by_set: dict[str, dict[str, list[dict]]] = {}
    for name in args.sets:
        results: dict[str, list[dict]] = {}
        for seed in args.seeds:
            folder = args.out / name / f"seed_{seed}"
            if not (folder / "run.json").exists():
                continue
            rows, scores = standardised_scores(folder)
            families = fault_families(args.out / name / f"data_seed_{seed}" / "dev_data")
            for candidate, (members, rule) in CANDIDATES.items():
                stacked = np.stack([scores[m] for m in members])
                fused = stacked.max(axis=0) if rule == "max" else stacked.mean(axis=0)
                results.setdefault(candidate, []).append(evaluate(rows, fused, families))
            results.setdefault(FLOOR, []).append(floor_result(folder))
        if results:
            print_table(f"{name} ({len(results[FLOOR])} seed(s); mean over seeds)", "score", results)
            by_set[name] = results
    if len(by_set) > 1:
        print_worst_cases(by_set)


if __name__ == "__main__":
    main()
