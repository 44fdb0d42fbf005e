"""`--preset paper` is the paper: its settings, its start-up check for AudioLDM weights, a scaled-down paper
run through the real code, the 41-ID protocol's data, and the Table 3 ablation."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dcase_files import assert_metrics_match_score_files
from rcmae.augment.audioldm import WeightsUnavailable
from rcmae.cli import main
from rcmae.config import paper
from rcmae.data.layout import index_clips
from rcmae.data.synth import synthesize
from rcmae.models.mae import RCMAE
from rcmae.models.objectives import PretrainObjective


def test_config_shows_the_papers_method(capsys):
    assert main(["config", "--preset", "paper"]) == 0
    shown = capsys.readouterr().out
    for line in ("augmenter: 'audioldm'", "model: 'cvssp/audioldm-s-full-v2'", "prompts: 'paper'", "eta: 1.0",
                 "method: 'id_logprob'", "mask_ratio: 0.5", "mask_ratio_max: 0.75", "contrastive: 'paper'",
                 "clip_seconds: 10.0", "guidance_scale: 2.5"):
        assert line in shown, line


def test_paper_preset_without_weights_stops_before_work_with_the_fix(tmp_path):
    from rcmae.distributed.augment_pipeline import run_augment

    config = paper().override({"augment.model": str(tmp_path / "no_weights")})
    with pytest.raises(WeightsUnavailable, match="huggingface-cli download .* --model DIR"):
        run_augment(tmp_path / "data", tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_mask_ratio_is_drawn_per_batch_within_the_papers_range():
    config = paper()
    objective = PretrainObjective(RCMAE(model=config.model, features=config.features), config.pretrain)
    torch.manual_seed(0)
    ratios = [objective.draw_mask_ratio() for _ in range(200)]
    assert 0.5 <= min(ratios) and max(ratios) <= 0.75 and np.std(ratios) > 0.05


def test_additional_training_set_adds_its_own_ids(tmp_path):
    synthesize(tmp_path, preset="small", types=("fan", "ToyConveyor"), additional=True)
    rows = index_clips(tmp_path).table.to_pylist()
    train = {(r["machine_type"], r["machine_id"]) for r in rows if r["split"] == "train"}
    test = {(r["machine_type"], r["machine_id"]) for r in rows if r["split"] == "test"}
    assert train == {("fan", i) for i in ("00", "01", "02", "03", "04", "05")} | {
        ("ToyConveyor", i) for i in ("00", "01", "02", "03", "04", "05")}
    assert test == {key for key in train if int(key[1]) % 2 == 0}  # evaluation on the dev test split
    assert all("eval_data" in r["path"] for r in rows if int(r["machine_id"]) % 2)


@pytest.mark.slow
@pytest.mark.ray
def test_a_scaled_down_paper_run_trains_over_dev_and_additional_ids(ray_session, tiny_audioldm, tmp_path, caplog):
    synthesize(tmp_path / "data", preset="small", types=("fan",), additional=True)
    scaled = {"augment.model": str(tiny_audioldm), "augment.steps_min": 2, "augment.steps_max": 2,
              "augment.variants": 1, "augment.use_gpu": False, "scale.use_gpu": False, "scale.num_workers": 0,
              "audio.clip_seconds": 2.0, "features.n_frames": 60, "model.embed_dim": 96, "model.depth": 2,
              "model.decoder_depth": 1, "model.proj_dim": 64, "pretrain.epochs": 1, "finetune.epochs": 1,
              "pretrain.batch_size": 32, "finetune.batch_size": 32}
    args = ["run", "--preset", "paper", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--no-baseline"] + [item for key, value in scaled.items() for item in ("--set", f"{key}={value}")]
    assert main(args) == 0
    model_meta = json.loads((tmp_path / "run" / "finetune" / "model" / "meta.json").read_text())
    assert model_meta["classes"] == [f"fan/{i:02d}" for i in range(6)]  # dev IDs and the additional set's
    assert "41 machine IDs" in caplog.text  # the paper's protocol is 41 classes: said, not silently different
    metrics = json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())
    assert metrics["method"] == "id_logprob" and {r["machine_id"] for r in metrics["per_id"]} == {"00", "02", "04"}
    rows = pq.read_table(tmp_path / "run" / "augment" / "features", columns=["split", "provenance"]).to_pylist()
    per_train_clip = [json.loads(row["provenance"]) for row in rows if row["split"] == "train"]
    assert per_train_clip and all(len(variants) == 1 for variants in per_train_clip)  # augment.variants=1
    provenance = [variant for variants in per_train_clip for variant in variants]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "`id_logprob` score (the paper's score)" in report
    assert "Preset `paper` (the paper's settings); augmenter `audioldm` (the paper's AudioLDM diffusion)" in report
    assert all(p["augmenter"] == "audioldm" and p["eta"] == 1.0 for p in provenance)


@pytest.mark.slow
@pytest.mark.ray
def test_ablate_writes_table_3_with_both_arms(ray_session, toy_root, tmp_path):
    import shutil

    data = tmp_path / "data" / "dev_data"
    shutil.copytree(toy_root / "dev_data" / "valve", data / "valve")
    args = ["ablate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ablation"), "--seeds", "0",
            "--set", "scale.num_workers=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1",
            "--set", "pretrain.batch_size=32", "--set", "finetune.batch_size=32"]
    assert main(args) == 0
    table = (tmp_path / "ablation" / "ablation.md").read_text()
    assert "factory-mix (stands in for AudioLDM: no diffusion weights given)" in table
    assert "Baseline (time and frequency masking)" in table
    assert table.count("| AUC |") == 2 and table.count("| PAUC |") == 2 and "valve" in table
    results = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    summary = json.loads((tmp_path / "ablation" / "masking" / "augment" / "summary.json").read_text())
    assert summary["augmenter"] == "masking" and summary["augmented_variants"] == 0  # masks drawn per step
    augmented, masking = results.values()  # arms in the order run: augmented/, masking/
    for arm, (run,) in (("augmented", augmented), ("masking", masking)):  # --seeds 0: one run per arm
        assert_metrics_match_score_files(tmp_path / "ablation" / arm / "seed_0" / "evaluation", run)

