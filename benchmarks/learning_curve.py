"""Does the model's margin over the floor grow with data? The learning curve README quotes.

For each number of train clips per machine ID and each seed, the toy factory's `small` preset (2 s clips, or
`--clip-seconds`) is synthesised with that many train clips per ID (the same test clips at every size; a smaller
train set is the start of a larger one) and run through `rcmae run` as a user runs it. Printed per size: the default
score, `mahalanobis`, the floor and the DCASE 2020 AE baseline (mean AUC / pAUC over types, mean over seeds), and
the default's margin over the floor. Runs already in --out are reused, so the script resumes.

    python benchmarks/learning_curve.py --out /tmp/w/curve --sizes 10 30 100 --seeds 0 1
    python benchmarks/learning_curve.py --out /tmp/w/curve --clip-seconds 10 --sizes 300 --seeds 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from families import results_of, run_toy
from rcmae.config import tiny

COLUMNS = ("mahalanobis", "floor", "dcase2020_ae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data sets and runs (resumable)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 30, 100, 300], help="train clips per ID")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the AE baseline")
    args = parser.parse_args()
    default = tiny().score.method
    names = (default, *COLUMNS)
    print(f"### {args.clip_seconds:g} s clips (mean AUC / pAUC over types, mean over seeds {args.seeds})\n")
    print("| train clips per ID | " + " | ".join(f"`{n}`" for n in names) + f" | `{default}` - floor |")
    print("|---|" + "---|" * (len(names) + 1))
    for size in args.sizes:
        runs = [results_of(run_toy(
            args.out / f"{args.clip_seconds:g}s_{size}" / f"seed_{seed}",
            args.out / f"{args.clip_seconds:g}s_{size}" / f"data_seed_{seed}", seed,
            ["--preset", "small", "--clip-seconds", str(args.clip_seconds), "--train-per-id", str(size)], [],
            not args.no_baseline)) for seed in args.seeds]
        means = {n: {k: np.mean([run[n]["mean"][k] for run in runs]) for k in ("auc", "pauc")}
                 for n in names if all(n in run for run in runs)}
        cells = [f"{means[n]['auc']:.3f} / {means[n]['pauc']:.3f}" if n in means else "-" for n in names]
        margin = {k: means[default][k] - means["floor"][k] for k in ("auc", "pauc")}
        print(f"| {size} | " + " | ".join(cells) + f" | {margin['auc']:+.3f} / {margin['pauc']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
