"""What only a GPU shows: AudioLDM's throughput, paper-size training speed, batched scoring, and what the paper's
DCASE 2020 run would cost. One table (markdown), and with --json the same figures as JSON.

    python benchmarks/gpu.py --json gpu.json          # on a GPU machine (about 5 minutes on one H100/H200)
    python benchmarks/gpu.py --smoke                  # tiny sizes, any machine: CI runs it on the CPU

Everything runs in-process, without Ray (the device image has none): the augmenter, the training stages and the
Detector are rcmae's own code, called as its Ray actors and workers call them. Sections:
- `pytest -m gpu`: the GPU tests' outcome;
- the device's dense matrix-multiply rate (bf16 on CUDA, fp32 elsewhere): the 100 % that MFU is measured against;
- AudioLDM SDEdit through `AudioLDMAugmenter` with random weights at audioldm-s-full-v2's sizes
  (`rcmae.augment.tiny --size full`), fp16: clips/s and peak memory per DDIM step count and batch size;
- both training stages at the paper's size (ViT depth 12, width 384, 6 heads, 512 tokens, batch 128) in bf16:
  samples/s, model FLOP utilisation and peak memory, on synthetic tensors (eager and `torch.compile`) and through
  rcmae's in-process trainer reading a feature Parquet (its data path; a gap to the synthetic figure is a GPU
  waiting for data);
- the Detector's scoring throughput at 1, 8, 32 and 128 windows per call;
- the projection: wall time and GPU-hours of `--preset paper` on DCASE 2020 dev + additional (38,119 train clips,
  K = 2 AudioLDM variants each, 400 + 100 epochs) on 1 and 8 GPUs, from the rates above (8 GPUs: linear scaling).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DCASE2020_TRAIN_CLIPS = 20_119 + 18_000  # dev train (ToyCar 4000, ToyConveyor 3000, fan 3675, pump 3349,
# slider 2804, valve 3291) + additional train (3000 per type)


@dataclass(frozen=True)
class Sizes:
    """What each section runs: the full measurement, or a smoke run small enough for a CPU."""

    audioldm: str
    steps: tuple[int, ...]
    batches: tuple[int, ...]
    clip_seconds: float
    preset: str
    batch_size: int
    steps_timed: int
    windows: tuple[int, ...]
    matmul: int
    compile_backend: str  # the smoke run traces with `aot_eager`: inductor's code generation takes minutes on a CPU


FULL = Sizes(audioldm="full", steps=(10, 30, 50), batches=(1, 8, 32), clip_seconds=10.0, preset="paper",
             batch_size=128, steps_timed=10, windows=(1, 8, 32, 128), matmul=8192, compile_backend="inductor")
SMOKE = Sizes(audioldm="tiny", steps=(2, 3), batches=(1, 2), clip_seconds=1.0, preset="tiny", batch_size=8,
              steps_timed=2, windows=(1, 4), matmul=1024, compile_backend="aot_eager")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_tests() -> dict:
    """`pytest -m gpu` over tests/test_gpu.py: its counts, or why it could not run."""
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_gpu.py")], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout)}
    return counts or {"error": (done.stdout + done.stderr).strip().splitlines()[-1:]}


def matmul_rate(device: torch.device, n: int) -> float:
    """Dense matrix-multiply FLOP/s (bf16 on CUDA, fp32 elsewhere), the best of a few timed rounds."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, repeats = float("inf"), 10 if device.type == "cuda" else 2
    for _ in range(3):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * n ** 3 / best


def audioldm_rates(device: torch.device, sizes: Sizes) -> list[dict]:
    """Clips per second and peak memory of rcmae's AudioLDM augmenter, per DDIM step count and batch size."""
    from rcmae.augment.audioldm import AudioLDMAugmenter, AudioLDMOptions, on_device
    from rcmae.augment.tiny import build_components

    parts = on_device(build_components(0, sizes.audioldm), device)
    rng = np.random.default_rng(0)
    rows = []
    for steps in sizes.steps:
        options = AudioLDMOptions(prompts="paper", steps_min=steps, steps_max=steps, eta=1.0)
        augmenter = AudioLDMAugmenter(options, 16000, str(device), components=parts)
        for batch in sizes.batches:
            clips = [rng.normal(0, 0.1, int(sizes.clip_seconds * 16000)).astype(np.float32) for _ in range(batch)]
            augmenter.augment(clips[:1], [0])  # warm-up: kernels chosen, memory pools grown
            reset_peak(device)
            synchronize(device)
            started = time.perf_counter()
            made = augmenter.augment(clips, list(range(batch)))
            synchronize(device)
            seconds = time.perf_counter() - started
            failed = [m for m in made if isinstance(m, Exception)]
            if failed:
                raise failed[0]
            rows.append(dict(steps=steps, batch=batch, clips_per_s=batch / seconds, peak_gib=peak_gib(device)))
    del parts
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def stage_step(stage, objective, optimizer, batch: dict, device: torch.device) -> None:
    from rcmae.train.loops import autocast

    with autocast(device):
        terms = stage.step(objective, batch)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()


def synthetic_batch(stage_name: str, config, device: torch.device, classes: int) -> dict[str, torch.Tensor]:
    shape = (config.pretrain.batch_size, config.features.n_mels, config.features.n_frames)
    if stage_name == "pretrain":
        return {"original": torch.randn(shape, device=device), "augmented": torch.randn(shape, device=device)}
    return {"specs": torch.randn(shape, device=device),
            "labels": torch.randint(0, classes, (shape[0],), device=device)}


def step_flops(stage, objective, batch: dict, device: torch.device) -> float:
    """Model FLOPs of one training step (forward and backward), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from rcmae.train.loops import autocast

    counter = FlopCounterMode(display=False)
    with counter, autocast(device):
        stage.step(objective, batch)["loss"].backward()
    objective.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def synthetic_training(device: torch.device, config, sizes: Sizes, rate: float, compiled: bool) -> list[dict]:
    """Both stages on synthetic tensors: samples/s, MFU against `rate`, peak memory."""
    from rcmae.models.mae import RCMAE
    from rcmae.train.stage import FINETUNE, PRETRAIN

    rows, classes = [], 41
    for stage in (PRETRAIN, FINETUNE):
        torch.manual_seed(0)
        model = RCMAE(model=config.model, features=config.features)
        if stage is FINETUNE:
            model = model.with_classifier(classes)
        model = model.to(device)
        objective = stage.objective(model, config).to(device)
        batch = synthetic_batch(stage.name, config, device, classes)
        flops = step_flops(stage, objective, batch, device)
        runner = torch.compile(objective, backend=sizes.compile_backend) if compiled else objective
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        started = time.perf_counter()
        stage_step(stage, runner, optimizer, batch, device)  # warm-up (with compile: the compilation)
        synchronize(device)
        warm_up = time.perf_counter() - started
        reset_peak(device)
        started = time.perf_counter()
        for _ in range(sizes.steps_timed):
            stage_step(stage, runner, optimizer, batch, device)
        synchronize(device)
        seconds = (time.perf_counter() - started) / sizes.steps_timed
        rows.append(dict(stage=stage.name, source="synthetic", compiled=compiled,
                         samples_per_s=config.pretrain.batch_size / seconds, mfu=flops / seconds / rate,
                         flops_per_sample=flops / config.pretrain.batch_size, peak_gib=peak_gib(device),
                         warm_up_s=warm_up))
        del model, objective, runner, optimizer
    return rows


def write_features(folder: Path, config, rows: int) -> Path:
    """A feature Parquet in rcmae's schema: `rows` train clips of four machine IDs, random log-mels (each ID
    offset, so the detector has something to fit) and K = 2 variants."""
    import pyarrow.parquet as pq

    from rcmae.data.feature_table import feature_rows

    rng = np.random.default_rng(0)
    n_mels, n_frames = config.features.n_mels, config.features.n_frames
    features_dir = folder / "features"
    features_dir.mkdir(parents=True)
    for start in range(0, rows, 64):
        count = min(64, rows - start)
        ids = [f"{(start + i) % 4:02d}" for i in range(count)]
        clips = [dict(path=f"/synthetic/fan/train/normal_id_{m}_{start + i:08d}.wav",
                      file_name=f"normal_id_{m}_{start + i:08d}.wav", machine_type="fan", machine_id=m,
                      split="train", label="normal", domain="source", attributes="", error=None)
                 for i, m in enumerate(ids)]
        specs = {i: (rng.normal(-4.0 + int(m), 1.0, (n_mels, n_frames))).astype(np.float32) for i, m in enumerate(ids)}
        variants = {i: [(spec + rng.normal(0, 0.3, spec.shape)).reshape(-1).astype(np.float32) for _ in range(2)]
                    for i, spec in specs.items()}
        provenance = {i: [{"augmenter": "synthetic"}] * 2 for i in specs}
        pq.write_table(feature_rows(clips, specs, variants, provenance, n_mels, n_frames),
                       features_dir / f"part-{start:06d}.parquet")
    return features_dir


def trainer_training(device: torch.device, config, sizes: Sizes, folder: Path, rate: float,
                     flops: dict[str, float]) -> tuple[list[dict], Path]:
    """Both stages through rcmae's in-process trainer on a feature Parquet, two epochs each: the second epoch's
    samples/s (the data path included) and MFU; returns them and the fine-tuned model folder."""
    from rcmae import stages

    rows_per_epoch = config.pretrain.batch_size * (sizes.steps_timed + 1)
    features = write_features(folder, config, rows_per_epoch)
    trained = config.override({"pretrain.epochs": 2, "finetune.epochs": 2, "scale.num_workers": 0})
    reset_peak(device)
    pretrained = stages.pretrain(trained, features, folder / "pretrain")
    model_dir = stages.finetune(trained, features, pretrained, folder / "finetune")
    rows = []
    for stage in ("pretrain", "finetune"):
        epochs = [json.loads(line) for line in (folder / stage / "metrics.jsonl").read_text().splitlines()]
        speed = epochs[-1]["samples_per_second"]
        rows.append(dict(stage=stage, source="trainer, from Parquet", compiled=False, samples_per_s=speed,
                         mfu=flops[stage] * speed / rate, flops_per_sample=flops[stage], peak_gib=peak_gib(device),
                         warm_up_s=None))
    return rows, model_dir


def scoring_rates(device: torch.device, model_dir: Path, sizes: Sizes, clip_seconds: float) -> list[dict]:
    """Windows per second of `Detector.score_prepared` at several windows per call (one clip-long window each)."""
    from rcmae import Detector

    detector = Detector.load(model_dir)
    rng = np.random.default_rng(0)
    rows = []
    for count in sizes.windows:
        prepared = [detector.prepare(rng.normal(0, 0.1, int(clip_seconds * 16000)).astype(np.float32), 16000,
                                     "fan", "00") for _ in range(count)]
        detector.score_prepared(prepared)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            detector.score_prepared(prepared)
        synchronize(device)
        rows.append(dict(windows_per_call=count, windows_per_s=count * repeats / (time.perf_counter() - started)))
    return rows


def projection(augment: list[dict], training: list[dict], config) -> dict:
    """Wall time and GPU-hours of the paper's DCASE 2020 run from the measured rates: K variants per train clip at
    the mean DDIM step count, then both stages' epochs through the trainer's data path."""
    steps = sorted({row["steps"] for row in augment})
    middle = steps[len(steps) // 2]
    generation = max(row["clips_per_s"] for row in augment if row["steps"] == middle)
    trainer = {row["stage"]: row["samples_per_s"] for row in training if row["source"] != "synthetic"}
    hours = {"augment": DCASE2020_TRAIN_CLIPS * config.augment.variants / generation / 3600,
             "pretrain": DCASE2020_TRAIN_CLIPS * config.pretrain.epochs / trainer["pretrain"] / 3600,
             "finetune": DCASE2020_TRAIN_CLIPS * config.finetune.epochs / trainer["finetune"] / 3600}
    total = sum(hours.values())
    return dict(clips=DCASE2020_TRAIN_CLIPS, variants=config.augment.variants, steps=middle,
                epochs=[config.pretrain.epochs, config.finetune.epochs], hours_per_part_1_gpu=hours,
                wall_hours={"1 GPU": total, "8 GPUs": total / 8}, gpu_hours=total)


def table(report: dict) -> str:
    lines = [f"## {report['device']} ({report['date']}; torch {report['torch']}; "
             f"{'smoke sizes' if report['smoke'] else 'full sizes'})", "",
             f"`pytest -m gpu`: {report['gpu_tests']}", "",
             f"Dense matrix multiply ({report['matmul_dtype']}): {report['matmul_tflops']:.1f} TFLOP/s", "",
             f"| AudioLDM SDEdit ({report['audioldm_size']}) DDIM steps | batch | clips/s | peak GiB |",
             "|---|---|---|---|"]
    for row in report["audioldm"]:
        peak = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        lines.append(f"| {row['steps']} | {row['batch']} | {row['clips_per_s']:.2f} | {peak} |")
    lines += ["", "| training stage (bf16 on CUDA) | source | torch.compile | samples/s | MFU | peak GiB | warm-up s |",
              "|---|---|---|---|---|---|---|"]
    for row in report["training"]:
        peak = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        warm = f"{row['warm_up_s']:.1f}" if row["warm_up_s"] is not None else "-"
        lines.append(f"| {row['stage']} | {row['source']} | {'yes' if row['compiled'] else 'no'} | "
                     f"{row['samples_per_s']:.1f} | {100 * row['mfu']:.1f} % | {peak} | {warm} |")
    lines += ["", "| Detector windows per call | windows/s |", "|---|---|"]
    lines += [f"| {row['windows_per_call']} | {row['windows_per_s']:.1f} |" for row in report["scoring"]]
    p = report["projection"]
    parts = ", ".join(f"{name} {hours:.1f} h" for name, hours in p["hours_per_part_1_gpu"].items())
    lines += ["", f"Projection, `--preset {report['preset']}` on DCASE 2020 dev + additional ({p['clips']:,} train "
              f"clips, K = {p['variants']} at {p['steps']} DDIM steps, {p['epochs'][0]} + {p['epochs'][1]} epochs): "
              f"1 GPU {p['wall_hours']['1 GPU']:.1f} h ({parts}); 8 GPUs {p['wall_hours']['8 GPUs']:.1f} h "
              f"if scaling is linear; {p['gpu_hours']:.1f} GPU-hours.",
              "", f"Wall time of this script: {report['seconds']:.0f} s"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU (CI)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--skip-tests", action="store_true", help="skip `pytest -m gpu`")
    args = parser.parse_args()
    from rcmae.config import paper, tiny

    started = time.time()
    sizes = SMOKE if args.smoke else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = (paper() if sizes.preset == "paper" else tiny()).override({"pretrain.batch_size": sizes.batch_size,
                                                                        "finetune.batch_size": sizes.batch_size})
    report = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
                  date=time.strftime("%Y-%m-%d"), torch=torch.__version__, smoke=args.smoke,
                  gpu_tests=gpu_tests() if not args.skip_tests else "skipped",
                  matmul_dtype="bf16" if device.type == "cuda" else "fp32", audioldm_size=sizes.audioldm,
                  preset=sizes.preset)
    rate = matmul_rate(device, sizes.matmul)
    report["matmul_tflops"] = rate / 1e12
    print(f"matmul: {rate / 1e12:.1f} TFLOP/s", file=sys.stderr, flush=True)
    report["audioldm"] = audioldm_rates(device, sizes)
    print("audioldm: done", file=sys.stderr, flush=True)
    training = synthetic_training(device, config, sizes, rate, compiled=False)
    if not args.no_compile:
        training += synthetic_training(device, config, sizes, rate, compiled=True)
    flops = {row["stage"]: row["flops_per_sample"] for row in training}
    print("synthetic training: done", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        trainer_rows, model_dir = trainer_training(device, config, sizes, Path(scratch), rate, flops)
        report["training"] = training + trainer_rows
        report["scoring"] = scoring_rates(device, model_dir, sizes, config.audio.clip_seconds or sizes.clip_seconds)
    report["projection"] = projection(report["audioldm"], report["training"], config)
    report["seconds"] = time.time() - started
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
