"""What each part of RC-MAE adds: one detector on each representation of the same clips, per fault kind, vs the floor.

For each run folder `benchmarks/families.py` made (its features and models reused), every representation is scored
the same way: a per-ID Gaussian of the clip vectors (`mahalanobis`, calibrated on held-out train clips, as the
detector does), alone and fused with `stats` (the mean of the two standardised log-scores, as `fused` does).
- `stats`: each normalised log-mel band's mean and deviation over time (what the floor reads), no model;
- `random`: the encoder with fresh weights (seeded like the run), untrained;
- `stage 1`: the run's pre-trained encoder (MAE + InfoNCE + VCR on original/augmented pairs);
- `stage 2`: the run's fine-tuned encoder (SupCon + CE over machine IDs on top of stage 1);
- with `--row-views`: the stage-2 encoder's pooled vector (each frequency row's mean token over time) with each
  row's spread over time beside it (`+ row std`), or its peak above the mean (`+ row peak`): what a brief or
  fluctuating fault changes and a time mean can hide;
- with `--variants`: both stages retrained in-process on the run's features with part of stage 1's objective off
  (`mae only`, `mae + infonce`), and the unchanged objective in-process (`paper, in-process`: the control, since
  in-process training draws batches differently from Ray Train's); minutes per variant and seed.

    python benchmarks/representation.py --out runs/families
    python benchmarks/representation.py --out runs/families --sets small --variants
    python benchmarks/representation.py --out runs/families --seeds 1 2 --variants "paper, in-process" "mae only"
    python benchmarks/representation.py --out runs/families --row-views
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from fusion import FLOOR, evaluate, floor_result, print_table
from rcmae import stages
from rcmae.config import load_config
from rcmae.data.classes import ClipClasses
from rcmae.data.feature_table import META_COLUMNS, specs_from_column, stream_rows
from rcmae.detect.calibration import calibrate, held_out_scores
from rcmae.detect.detector import Encoded, anomaly_scores, fit_scorer
from rcmae.detect.encode import encode_all
from rcmae.detect.fusions import standardised
from rcmae.evaluate.families import fault_families
from rcmae.models.checkpoint import Checkpoint, load_checkpoint
from rcmae.models.mae import RCMAE
from rcmae.sections import ScoreConfig

VARIANTS = {  # name -> stage-1 overrides
    "paper, in-process": {},
    "mae only": {"pretrain.lambda_con": 0.0, "pretrain.lambda_vcr": 0.0, "pretrain.lambda_mae": 1.0},
    "mae + infonce": {"pretrain.lambda_vcr": 0.0},
}
METHODS = ("mahalanobis", "stats")
STATS = "stats (the floor's statistics)"


def split_specs(features: Path, split: str, checkpoint: Checkpoint) -> tuple[list[dict], np.ndarray]:
    shape = (checkpoint.config.features.n_mels, checkpoint.config.features.n_frames)
    tables = list(stream_rows(features, META_COLUMNS + ["features"], (split,)))
    return ([row for t in tables for row in t.select(META_COLUMNS).to_pylist()],
            np.concatenate([specs_from_column(t["features"], *shape) for t in tables]))


def detector_scores(train: Encoded, train_keys: list[str], test: Encoded, test_keys: list[str]) -> dict:
    """`METHODS`' standardised log-scores of the test clips, from per-ID models of the train clips."""
    config, classes = ScoreConfig(), sorted(set(train_keys))
    detector = fit_scorer(train, train_keys, config)
    keys = np.array(train_keys)
    for key in classes:
        own = keys == key
        held = held_out_scores(train.select(own), key, ClipClasses.as_machine(classes, key, int(own.sum())), config,
                               METHODS)
        for method in METHODS:
            calibrate(detector, method, key, held[method])
    clips = ClipClasses.of_machines(classes, test_keys)
    return {method: standardised(method, anomaly_scores(method, test, test_keys, clips, detector), test_keys, detector)
            for method in METHODS}


@torch.no_grad()
def row_views(model: RCMAE, specs: np.ndarray, normalizer, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Each frequency row's spread of the encoded tokens over time, and its peak above their mean (N, rows * width)."""
    model.eval()
    rows, cols = model.feature_config.grid
    spreads, peaks = [], []
    for start in range(0, len(specs), batch_size):
        batch = torch.as_tensor(normalizer(specs[start:start + batch_size]), dtype=torch.float32)
        grid = model.embed(batch)[2].float().reshape(len(batch), rows, cols, -1)
        spreads.append(grid.std(dim=2).reshape(len(batch), -1).numpy())
        peaks.append((grid.amax(dim=2) - grid.mean(dim=2)).reshape(len(batch), -1).numpy())
    return {"row std": np.concatenate(spreads).astype(np.float64), "row peak": np.concatenate(peaks).astype(np.float64)}


def representations(folder: Path, seed: int, variants: list[str]) -> dict[str, RCMAE]:
    finetuned = load_checkpoint(folder / "finetune" / "model")
    torch.manual_seed(seed)
    found = {"random": RCMAE(model=finetuned.config.model, features=finetuned.config.features),
             "stage 1": load_checkpoint(folder / "pretrain" / "model").model, "stage 2": finetuned.model}
    for name in variants:
        overrides = VARIANTS[name]
        config = load_config(path=folder / "config.yaml", overrides={"scale.num_workers": 0, **overrides})
        out = folder / "representation" / name.replace(" ", "_").replace(",", "").replace("+", "and")
        started = time.time()
        pretrained = stages.pretrain(config, folder / "augment" / "features", out / "pretrain")
        model_dir = stages.finetune(config, folder / "augment" / "features", pretrained, out / "finetune")
        print(f"{folder} {name}: both stages in {time.time() - started:.0f} s", flush=True)
        found[f"{name}: stage 2"] = load_checkpoint(model_dir).model
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder benchmarks/families.py wrote")
    parser.add_argument("--sets", nargs="+", default=["small", "hard", "long"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--row-views", action="store_true",
                        help="also the stage-2 pooled vector with each frequency row's spread or peak over time")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=None,
                        help="also retrain with parts of stage 1 switched off (these variants; all when none named)")
    args = parser.parse_args()
    for name in args.sets:
        results: dict[str, list[dict]] = {}
        for seed in args.seeds:
            folder = args.out / name / f"seed_{seed}"
            if not (folder / "run.json").exists():
                continue
            finetuned = load_checkpoint(folder / "finetune" / "model")
            features = folder / "augment" / "features"
            train_rows, train_specs = split_specs(features, "train", finetuned)
            test_rows, test_specs = split_specs(features, "test", finetuned)
            train_keys = [f"{r['machine_type']}/{r['machine_id']}" for r in train_rows]
            test_keys = [f"{r['machine_type']}/{r['machine_id']}" for r in test_rows]
            families = fault_families(args.out / name / f"data_seed_{seed}" / "dev_data")
            variants = list(VARIANTS) if args.variants == [] else (args.variants or [])
            encoded = {}
            for label, model in representations(folder, seed, variants).items():
                encoded[label] = (encode_all(model, train_specs, finetuned.normalizer),
                                  encode_all(model, test_specs, finetuned.normalizer))
            if args.row_views:
                train, test = encoded["stage 2"]
                extra = (row_views(finetuned.model, train_specs, finetuned.normalizer),
                         row_views(finetuned.model, test_specs, finetuned.normalizer))
                for view in ("row std", "row peak"):
                    encoded[f"stage 2 + {view}"] = tuple(
                        dataclasses.replace(part, pooled=np.hstack([part.pooled, views[view]]))
                        for part, views in zip((train, test), extra))
            for label, (train, test) in encoded.items():
                scores = detector_scores(train, train_keys, test, test_keys)
                results.setdefault(STATS, [])  # listed first
                results.setdefault(label, []).append(evaluate(test_rows, scores["mahalanobis"], families))
                results.setdefault(f"stats + {label}", []).append(
                    evaluate(test_rows, (scores["mahalanobis"] + scores["stats"]) / 2, families))
            results[STATS].append(evaluate(test_rows, scores["stats"], families))
            results.setdefault(FLOOR, []).append(floor_result(folder))
        if results:
            print_table(f"{name} ({len(results[FLOOR])} seed(s); `mahalanobis` on each representation; mean over "
                        f"seeds)", "representation", results)


if __name__ == "__main__":
    main()
