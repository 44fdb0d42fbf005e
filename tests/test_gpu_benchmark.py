"""benchmarks/gpu.py: its projection's arithmetic, and its smoke run (tiny sizes) on whatever device is here, as CI
runs it, so the GPU minutes go to measuring."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rcmae.config import paper

ROOT = Path(__file__).resolve().parents[1]


def gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_projection_is_clips_over_rates_at_the_middle_step_count():
    augment = [dict(steps=10, batch=8, clips_per_s=9.0), dict(steps=30, batch=8, clips_per_s=2.0),
               dict(steps=30, batch=32, clips_per_s=4.0), dict(steps=50, batch=32, clips_per_s=1.0)]
    training = [dict(stage="pretrain", source="synthetic", samples_per_s=1e6),  # not what the trainer reaches
                dict(stage="pretrain", source="trainer, from Parquet", samples_per_s=1000.0),
                dict(stage="finetune", source="trainer, from Parquet", samples_per_s=2000.0)]
    gpu = gpu_benchmark()
    result = gpu.projection(augment, training, paper())
    clips = gpu.DCASE2020_TRAIN_CLIPS
    expected = {"augment": clips * 2 / 4.0 / 3600, "pretrain": clips * 400 / 1000 / 3600,
                "finetune": clips * 100 / 2000 / 3600}
    assert result["hours_per_part_1_gpu"] == pytest.approx(expected)
    assert result["wall_hours"]["8 GPUs"] == pytest.approx(sum(expected.values()) / 8)
    assert result["steps"] == 30 and clips == 38_119


@pytest.mark.slow
def test_the_smoke_run_measures_every_section(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--smoke", "--json", str(tmp_path / "gpu.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["smoke"] and report["matmul_tflops"] > 0
    assert "passed" in report["gpu_tests"] or "skipped" in report["gpu_tests"], report["gpu_tests"]
    assert [(r["steps"], r["batch"]) for r in report["audioldm"]] == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert {(r["stage"], r["source"], r["compiled"]) for r in report["training"]} == {
        (stage, source, compiled) for stage in ("pretrain", "finetune")
        for source, compiled in (("synthetic", False), ("synthetic", True), ("trainer, from Parquet", False))}
    assert all(r["samples_per_s"] > 0 and r["mfu"] > 0 for r in report["training"])
    assert [r["windows_per_call"] for r in report["scoring"]] == [1, 4]
    assert report["projection"]["wall_hours"]["1 GPU"] > 0
    assert "| Detector windows per call | windows/s |" in done.stdout
