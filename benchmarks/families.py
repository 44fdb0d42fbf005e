"""What each score hears, per fault family, over several seeds: the table README quotes.

For each data set (the toy factory's `small` preset, its `hard` preset with brief faults and more timing faults,
and `long`: the small preset's machines in 10 s clips) and each seed, a fresh toy factory (synthesised with that
seed) is run through `rcmae run` as a user runs it (the model seeded the same), and every score's per-family AUC
is read back from the run folder, beside the DCASE 2020 AE baseline's and the floor's. Runs already in --out are
reused, so the script resumes and, once every run is there, only prints.

    python benchmarks/families.py --out runs/families              # all three sets, seeds 0 1 2
    python benchmarks/families.py --out runs/families --sets small --seeds 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SETS = {  # synth options, `rcmae run` options
    "small": (["--preset", "small"], []),
    # 4 s clips kept whole (tiny would crop their middle 2 s, where a brief fault may not be)
    "hard": (["--preset", "hard"], ["--set", "audio.clip_seconds=4.0", "--set", "features.n_frames=128"]),
    "long": (["--preset", "small", "--clip-seconds", "10"], []),  # `rcmae run` picks the cpu preset for 10 s
}
REFERENCES = {"dcase2020_ae": "baseline", "floor": "floor"}


def run_once(out: Path, name: str, seed: int, baseline: bool) -> Path:
    synth, options = SETS[name]
    return run_toy(out / name / f"seed_{seed}", out / name / f"data_seed_{seed}", seed, synth, options, baseline)


def run_toy(folder: Path, data: Path, seed: int, synth: list[str], options: list[str], baseline: bool) -> Path:
    """`rcmae run` into `folder` on the toy factory `rcmae synth ... synth` writes into `data` (both kept, so a
    re-run reuses them), the model seeded with the data's seed."""
    if (folder / "run.json").exists():
        return folder
    if not (data / "manifest.json").exists():
        subprocess.run(["rcmae", "synth", "--out", str(data), "--seed", str(seed), *synth], check=True,
                       stdout=subprocess.DEVNULL)
    started = time.time()
    subprocess.run(["rcmae", "run", "--data", str(data / "dev_data"), "--out", str(folder),
                    "--set", f"pretrain.seed={seed}", "--set", f"finetune.seed={seed}", *options,
                    *([] if baseline else ["--no-baseline"])], check=True, stdout=subprocess.DEVNULL)
    print(f"{folder}: {time.time() - started:.0f} s", file=sys.stderr)
    return folder


def results_of(folder: Path) -> dict[str, dict]:
    """Score or reference name -> its metrics.json, for one run folder."""
    main = json.loads((folder / "evaluation" / "metrics.json").read_text())
    found = {main["method"]: main}
    for other in sorted((folder / "evaluation" / "other_methods").glob("*/metrics.json")):
        found[other.parent.name] = json.loads(other.read_text())
    for reference, sub in REFERENCES.items():
        path = folder / sub / "metrics.json"
        if path.exists():
            found[reference] = json.loads(path.read_text())
    return found


def table(name: str, runs: list[dict[str, dict]]) -> str:
    """Markdown: mean AUC over seeds per family for every score, then the kind means and the mean over types."""
    names = list(runs[0])
    cells: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for run in runs:
        for method, metrics in run.items():
            for row in metrics["families"]["per_family"]:
                cells.setdefault((row["machine_type"], row["family"], row["kind"]), {}).setdefault(
                    method, []).append(row["auc"])
    lines = [f"### {name} ({len(runs)} seeds; AUC, mean over seeds)", "",
             "| machine type | family | kind | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for (machine_type, family, kind), per in sorted(cells.items(), key=lambda item: (item[0][0].lower(), item[0][1])):
        lines.append(f"| {machine_type} | {family} | {kind} | "
                     + " | ".join(f"{np.mean(per[n]):.3f}" if n in per else "-" for n in names) + " |")
    for kind in ("added-sound", "timing"):
        means = [[run[n]["families"]["per_kind"][kind]["auc"] for run in runs if kind in run[n]["families"]["per_kind"]]
                 for n in names]
        lines.append(f"| mean | {kind} | | " + " | ".join(f"**{np.mean(m):.3f}**" for m in means) + " |")
    overall = [[run[n]["mean"]["auc"] for run in runs] for n in names]
    lines.append("| mean over types | | | " + " | ".join(f"**{np.mean(m):.3f} ± {np.std(m):.3f}**" for m in overall)
                 + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data sets and runs (resumable)")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-baseline", action="store_true", help="skip the AE baseline (saves ~1.5 min a run)")
    args = parser.parse_args()
    for name in args.sets:
        runs = [results_of(run_once(args.out, name, seed, not args.no_baseline)) for seed in args.seeds]
        print(table(name, runs), flush=True)


if __name__ == "__main__":
    main()
