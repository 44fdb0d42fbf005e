"""Weight initialisation: PyTorch's layer defaults against the reference MAE's (Xavier-uniform linear layers,
zero biases), both stages trained in-process on the same toy-factory features with three training seeds.
Prints mean AUC / pAUC over machine types per seed for the default score and the paper's.

    python benchmarks/weight_init.py [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import start_ray, toy_features
from rcmae.config import tiny
from rcmae.evaluate.results import write_scored
from rcmae.stages import finetune, pretrain, score_test_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=tiny().pretrain.epochs)
    args = parser.parse_args()
    start_ray()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        features = toy_features(folder)
        print(f"toy factory (small), tiny preset, {args.epochs} epochs per stage, in-process")
        results: dict[str, list[tuple[float, ...]]] = {}
        for init in ("torch", "mae"):
            for seed in args.seeds:
                config = tiny().override({"model.weight_init": init, "scale.num_workers": 0,
                                          "pretrain.epochs": args.epochs, "finetune.epochs": args.epochs,
                                          "pretrain.seed": seed, "finetune.seed": seed})
                run = folder / f"{init}_{seed}"
                model = finetune(config, features, pretrain(config, features, run / "pretrain"), run / "finetune")
                scored = score_test_split(config.scale, model, features)
                methods = write_scored(scored, model, run / "evaluation").methods
                row = (methods["mahalanobis"]["auc"], methods["mahalanobis"]["pauc"],
                       methods["id_logprob"]["auc"], methods["id_logprob"]["pauc"])
                results.setdefault(init, []).append(row)
                print(f"init={init:5s} seed={seed}  mahalanobis AUC {row[0]:.3f} pAUC {row[1]:.3f}   "
                      f"id_logprob AUC {row[2]:.3f} pAUC {row[3]:.3f}", flush=True)
        for init, rows in results.items():
            mean = np.mean(rows, axis=0)
            print(f"init={init:5s} mean    mahalanobis AUC {mean[0]:.3f} pAUC {mean[1]:.3f}   "
                  f"id_logprob AUC {mean[2]:.3f} pAUC {mean[3]:.3f}")


if __name__ == "__main__":
    main()
