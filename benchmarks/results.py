"""Regenerates docs/RESULTS.md, the results README links to: each table with the command that made it, the date,
the machine (cores, memory, GPU or none) and the package versions.

    python benchmarks/results.py --out runs/results                  # every section (hours on 2 cores)
    python benchmarks/results.py --out runs/results --sections families

Sections: `families` (benchmarks/families.py: every score, the DCASE 2020 AE baseline and the floor per fault
family, three seeds of the toy factory's small and hard presets and of its 10 s clips), `ablation` (`rcmae
ablate` on the small toy factory, three seeds: the paper's Table 3 with factory-mix standing in for AudioLDM),
`scale` (benchmarks/scale.py: driver memory and time at paper feature size as the data grows), `serve`
(benchmarks/serve.py on the small set's seed-0 model: the live service under load), and, on the runs `families`
made (it runs them when missing), `representation` (benchmarks/representation.py: the same detector on each
encoder, what each part adds) and `fusion` (benchmarks/fusion.py: the candidate fusions against the floor).
The runs are kept in --out and reused, so an interrupted regeneration resumes; a section not asked for keeps its
text from the file's previous version (the file says which, and that their figures are older), or is left out.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import families

SECTIONS = ("fusion", "representation", "families", "ablation", "scale", "serve")
HEADINGS = {"fusion": "## The default score against the floor: which fusion",
            "representation": "## What each part of RC-MAE adds",
            "families": "## What each score hears, per fault family",
            "ablation": "## The paper's Table 3 on the toy factory",
            "scale": "## Driver memory and time as the data grows", "serve": "## The live service under load"}
PACKAGES = ("rcmae", "torch", "torchaudio", "ray", "numpy", "scikit-learn", "scipy", "pyarrow")


def machine() -> str:
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, {gpu}; {platform.platform()}; Python {platform.python_version()}"


def versions() -> str:
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)


def families_section(out: Path, seeds: list[int]) -> str:
    parts = [HEADINGS["families"], "",
             f"`python benchmarks/families.py --out {out / 'families'} --seeds {' '.join(map(str, seeds))}`: "
             "for each seed a fresh toy factory (synthesised with that seed) through `rcmae run` (model seeded the "
             "same). Columns: every score of the model (the run's configured one first), the DCASE 2020 AE "
             "baseline and the floor (a per-ID Gaussian on each clip's log-mel mean and standard deviation).", ""]
    for name in families.SETS:
        runs = [families.results_of(families.run_once(out / "families", name, seed, True)) for seed in seeds]
        parts.append(families.table(name, runs))
    return "\n".join(parts)


def on_family_runs(name: str, script: str, out: Path, seeds: list[int], lead: str) -> str:
    """A benchmark over the `families` runs (made first where missing), its printed tables as the section."""
    for set_name in families.SETS:
        for seed in seeds:
            families.run_once(out / "families", set_name, seed, True)
    arguments = ["--out", str(out / "families"), "--seeds", *map(str, seeds)]
    printed = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *arguments], check=True,
                             capture_output=True, text=True).stdout
    return "\n".join([HEADINGS[name], "", f"`python benchmarks/{script} {' '.join(arguments)}`: {lead}", "",
                      printed.strip()])


def fusion_section(out: Path, seeds: list[int]) -> str:
    return on_family_runs("fusion", "fusion.py", out, seeds, (
        "each candidate rule over the model's scores, each score standardised per ID on held-out train clips (the "
        "detector refitted on each run's train split, nothing retrained), beside the floor the run wrote."))


def representation_section(out: Path, seeds: list[int]) -> str:
    return on_family_runs("representation", "representation.py", out, seeds, (
        "the same per-ID Gaussian (`mahalanobis`, held-out calibration) on each representation of the same clips, "
        "alone and fused with `stats` (the mean of the two standardised log-scores)."))


def ablation_section(out: Path, seeds: list[int]) -> str:
    data = out / "ablation_data"
    if not (data / "manifest.json").exists():
        subprocess.run(["rcmae", "synth", "--out", str(data), "--preset", "small", "--seed", "0"], check=True,
                       stdout=subprocess.DEVNULL)
    command = ["rcmae", "ablate", "--data", str(data / "dev_data"), "--out", str(out / "ablation"),
               "--seeds", *map(str, seeds)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    table = (out / "ablation" / "ablation.md").read_text()
    return "\n".join([HEADINGS["ablation"], "", f"`{' '.join(command)}`", "", table])


def scale_section(out: Path, seeds: list[int]) -> str:
    command = [sys.executable, str(Path(__file__).with_name("scale.py"))]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return "\n".join([HEADINGS["scale"], "", "`python benchmarks/scale.py`", "", "```", printed.strip(), "```"])


def serve_section(out: Path, seeds: list[int]) -> str:
    run = families.run_once(out / "families", "small", seeds[0], True)
    command = [sys.executable, str(Path(__file__).with_name("serve.py")), "--model", str(run / "finetune" / "model"),
               "--data", str(out / "families" / "small" / f"data_seed_{seeds[0]}" / "dev_data")]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    shown = " ".join(["python benchmarks/serve.py", *command[2:]])
    return "\n".join([HEADINGS["serve"], "", f"`{shown}`", "", printed.strip()])


def previous_sections(path: Path) -> dict[str, str]:
    """Section name -> its text in the file as it is (from its heading to the next section's)."""
    if not path.exists():
        return {}
    text, found = path.read_text(), {}
    starts = sorted((text.find(heading + "\n"), name) for name, heading in HEADINGS.items() if heading + "\n" in text)
    for (start, name), (end, _) in zip(starts, starts[1:] + [(len(text), "")]):
        found[name] = text[start:end].strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs (reused: resumable)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md")
    args = parser.parse_args()
    makers = {"families": families_section, "ablation": ablation_section, "scale": scale_section,
              "serve": serve_section, "fusion": fusion_section, "representation": representation_section}
    kept = {name: text for name, text in previous_sections(args.results).items() if name not in args.sections}
    made = {name: makers[name](args.out, args.seeds) for name in args.sections}
    body = [made.get(name) or kept[name] for name in SECTIONS if name in made or name in kept]
    left_out = [name for name in SECTIONS if name not in made and name not in kept]
    header = ["# Results", "",
              f"Regenerated by `python benchmarks/results.py {' '.join(sys.argv[1:])}` on "
              f"{datetime.date.today().isoformat()}.", "",
              f"- Machine: {machine()}", f"- Packages: {versions()}"]
    if kept:
        header.append(f"- Kept from the previous version of this file, not regenerated this time (older figures; "
                      f"run with `--sections {' '.join(kept)}`): {', '.join(kept)}")
    if left_out:
        header.append(f"- Not in this file (run with `--sections {' '.join(left_out)}`): {', '.join(left_out)}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(header) + "\n\n" + "\n\n".join(body))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
