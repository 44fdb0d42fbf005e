"""Stage 2's classes on a toy factory in the DCASE 2023 shape: machine IDs against attributes, beside the floor.

For each seed, the toy factory is synthesised in the 2023 layout (one section per machine type, its machines as
operating modes named by attributes, a shifted target domain with 3 train clips per mode) and run through
`rcmae run` twice, once with `finetune.classes=id` (one class per type: the paper's score has nothing to learn)
and once with `finetune.classes=attributes`, the same seed for both. Printed: the mean over seeds of each score's
mean AUC and pAUC and DCASE 2023's harmonic mean over sections and domains (`hmean`), beside the floor's. Runs
already in --out are reused.

    python benchmarks/classes.py --out runs/classes                  # seeds 0 1 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from families import results_of

CHOICES = ("id", "attributes")
SCORES = ("id_logprob", "mahalanobis", "knn", "fused")


def run_once(out: Path, seed: int, classes: str) -> Path:
    folder = out / f"seed_{seed}_{classes}"
    if (folder / "run.json").exists():
        return folder
    data = out / f"data_seed_{seed}"
    if not (data / "manifest.json").exists():
        subprocess.run(["rcmae", "synth", "--out", str(data), "--seed", str(seed), "--layout", "dcase2023"],
                       check=True, stdout=subprocess.DEVNULL)
    started = time.time()
    subprocess.run(["rcmae", "run", "--data", str(data / "dev_data"), "--out", str(folder), "--no-baseline",
                    "--set", f"pretrain.seed={seed}", "--set", f"finetune.seed={seed}",
                    "--set", f"finetune.classes={classes}"], check=True, stdout=subprocess.DEVNULL)
    print(f"seed {seed}, {classes}: {time.time() - started:.0f} s", file=sys.stderr)
    return folder


def row(label: str, found: list[dict]) -> str:
    def mean(part: str) -> str:
        values = [f["mean"][part] for f in found if f["mean"].get(part) is not None]
        return f"{np.mean(values):.3f}" if values else "-"

    hmeans = [f["domains"]["mean"]["hmean"] for f in found if f.get("domains")]
    return f"| {label} | {mean('auc')} | {mean('pauc')} | {np.mean(hmeans):.3f} |" if hmeans else \
        f"| {label} | {mean('auc')} | {mean('pauc')} | - |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data sets and runs (resumable)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    runs = {choice: [results_of(run_once(args.out, seed, choice)) for seed in args.seeds] for choice in CHOICES}
    print(f"### DCASE 2023 shape ({len(args.seeds)} seed(s); mean over seeds)\n")
    print("| stage-2 classes, score | mean AUC | mean pAUC | hmean (sections x domains) |\n|---|---|---|---|")
    for choice in CHOICES:
        for score in SCORES:
            print(row(f"{choice}, `{score}`", [found[score] for found in runs[choice]]))
    print(row("floor (the run's reference)", [found["floor"] for found in runs["attributes"]]))


if __name__ == "__main__":
    main()
