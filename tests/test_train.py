import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from dcase_files import read_scores
from rcmae.config import ConfigError
from rcmae.detect.detector import GAUSSIAN_PARTS, PROFILES
from rcmae.detect.patches import PatchModel
from rcmae.evaluate.dcase_csv import score_file
from rcmae.evaluate.metrics import Metrics
from rcmae.evaluate.recordings import score_recordings
from rcmae.evaluate.results import evaluate_checkpoint
from rcmae.models.checkpoint import load_checkpoint, load_detector_arrays, save_checkpoint, save_detector_arrays
from rcmae.registry import SCORES
from rcmae.train.local import finetune_local, pretrain_local


@pytest.fixture(scope="module")
def trained(toy_features, tmp_path_factory):
    from rcmae.config import tiny

    config = tiny().override({"pretrain.epochs": 2, "finetune.epochs": 2, "pretrain.batch_size": 32,
                              "finetune.batch_size": 32, "scale.num_workers": 0})
    out = tmp_path_factory.mktemp("trained")
    pretrained = pretrain_local(config, toy_features, out / "pretrain")
    model = finetune_local(config, toy_features, pretrained, out / "finetune")
    return config, out, pretrained, model


def test_stages_log_every_term_and_publish_models(trained):
    _, out, pretrained, model = trained
    stage1 = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in stage1] == [1, 2]
    assert {"contrastive", "vcr", "mae", "loss", "z_std"} <= set(stage1[0])
    stage2 = [json.loads(line) for line in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert {"supcon", "ce", "loss", "accuracy", "z_std"} <= set(stage2[0])
    checkpoint = load_checkpoint(model)
    assert checkpoint.classes == ["fan/00", "fan/02", "fan/04", "valve/00", "valve/02", "valve/04"]
    assert set(checkpoint.meta.detector.thresholds) == set(SCORES)
    arrays = load_detector_arrays(model, checkpoint.meta)
    profiles = (f"{profile}_{part}" for profile in PROFILES for part in ("mean", "inverse"))
    parts = ("centroid", *GAUSSIAN_PARTS, *profiles, *(f"patch_{p}" for p in PatchModel.PARTS), "neighbours")
    assert {f"{kind}/{key}" for kind in parts for key in checkpoint.classes} == set(arrays)
    assert load_checkpoint(pretrained).meta.stage == "pretrain"


def test_resumed_run_equals_uninterrupted(toy_features, quick_config, tmp_path):
    import shutil

    config = quick_config.override({"pretrain.epochs": 3})
    whole = pretrain_local(config, toy_features, tmp_path / "whole")
    pretrain_local(config, toy_features, tmp_path / "resumed")
    # a crash during epoch 3: its checkpoint and metrics line never got written
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "epoch_0003")
    log = tmp_path / "resumed" / "metrics.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    resumed = pretrain_local(config, toy_features, tmp_path / "resumed")
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3]


def test_a_torn_checkpoint_is_passed_over_and_the_resume_equals_an_uninterrupted_run(toy_features, quick_config,
                                                                                    tmp_path, caplog):
    config = quick_config.override({"pretrain.epochs": 3})
    whole = pretrain_local(config, toy_features, tmp_path / "whole")
    pretrain_local(config, toy_features, tmp_path / "torn")
    checkpoints = tmp_path / "torn" / "checkpoints"
    weights = checkpoints / "epoch_0003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short by a kill
    (checkpoints / ".epoch_0004.partial").mkdir()  # a staging folder a kill left behind
    resumed = pretrain_local(config, toy_features, tmp_path / "torn")
    assert f"resume: skipping {checkpoints / 'epoch_0003'}" in caplog.text
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert [h["epoch"] for h in load_checkpoint(resumed).meta.history] == [1, 2, 3]


def test_evaluation_files_reproduce_metrics(trained, toy_root, tmp_path):
    _, _, _, model = trained
    metrics = evaluate_checkpoint(model, toy_root / "dev_data" / "fan", tmp_path)
    assert {r["machine_id"] for r in metrics.per_id} == {"00", "02", "04"}
    for row in metrics.per_id:
        scores = read_scores(score_file(tmp_path, "fan", row["machine_id"]))
        labels = [name.startswith("anomaly") for name in scores]
        assert row["auc"] == pytest.approx(roc_auc_score(labels, list(scores.values())))
        assert row["pauc"] == pytest.approx(roc_auc_score(labels, list(scores.values()), max_fpr=0.1))
    assert set(metrics.methods) == set(SCORES)
    assert Metrics.read(tmp_path / "metrics.json") == metrics  # the file holds what was returned


def test_checkpoint_round_trip_gives_identical_scores(trained, toy_root, tmp_path):
    _, _, _, model = trained
    clips = sorted(str(p) for p in (toy_root / "dev_data" / "valve" / "test").glob("*.wav"))[:6]
    before = score_recordings(model, clips).rows
    checkpoint = load_checkpoint(model)
    save_checkpoint(tmp_path / "copy", checkpoint.model, checkpoint.config, checkpoint.meta)
    save_detector_arrays(tmp_path / "copy", load_detector_arrays(model, checkpoint.meta))
    after = score_recordings(tmp_path / "copy", clips).rows
    copy = load_checkpoint(tmp_path / "copy")
    for key, value in checkpoint.model.state_dict().items():  # bit-identical weights
        assert np.array_equal(value.numpy(), copy.model.state_dict()[key].numpy()), key
    assert copy.meta.detector == checkpoint.meta.detector
    # CPU kernels may sum in a different order from call to call: scores agree to float32 round-off
    assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before], rel=1e-3, abs=1e-6)
    assert {r["decision"] for r in before} <= {0, 1}


def test_finetune_refuses_a_different_architecture(trained, toy_features, tmp_path):
    config, _, pretrained, _ = trained
    with pytest.raises(ConfigError, match="`model` config differs"):
        finetune_local(config.override({"model.depth": 1}), toy_features, pretrained, tmp_path)


@pytest.mark.slow
def test_tiny_preset_beats_random_on_the_toy_factory(toy_root, toy_features, tmp_path):
    """The whole method at the tiny preset's own epochs (fan and valve of toy-factory `small`)."""
    from rcmae.config import tiny

    config = tiny().override({"scale.num_workers": 0})
    pretrained = pretrain_local(config, toy_features, tmp_path / "pretrain")
    model = finetune_local(config, toy_features, pretrained, tmp_path / "finetune")
    results = [evaluate_checkpoint(model, toy_root / "dev_data" / machine, tmp_path / machine)
               for machine in ("fan", "valve")]
    mean_auc = np.mean([r.mean["auc"] for r in results])
    assert mean_auc > 0.55, [r.mean for r in results]


def test_scoring_scores_every_readable_known_clip_and_lists_the_rest(trained, toy_root, tmp_path, capsys):
    import shutil

    from rcmae.cli import main

    _, _, _, model = trained
    good = sorted(str(p) for p in (toy_root / "dev_data" / "fan" / "test").glob("normal_*.wav"))[:2]
    unknown = tmp_path / "fan" / "test" / "normal_id_09_00000000.wav"
    unknown.parent.mkdir(parents=True)
    shutil.copy(good[0], unknown)
    broken = tmp_path / "fan" / "test" / "normal_id_00_00000099.wav"
    broken.write_bytes(b"not audio at all")
    odd_name = tmp_path / "recording.wav"
    shutil.copy(good[0], odd_name)
    paths = good + [str(unknown), str(broken), str(odd_name), str(tmp_path / "missing.wav")]
    result = score_recordings(model, paths)
    assert [r["file"] for r in result.rows] == good
    reasons = {Path(f["file"]).name: f["reason"] for f in result.failures}
    assert reasons["missing.wav"] == "not found" and "unknown machine fan/09" in reasons[unknown.name]
    assert "--machine-id" in reasons["recording.wav"] and broken.name in reasons
    assert main(["score", "--checkpoint", str(model), *paths]) == 3
    assert "2 scored, 4 not scored" in capsys.readouterr().err
    # a name outside the grammar scores with the machine given (an ID typed as a number is DCASE's "00")
    named = score_recordings(model, [str(odd_name)], machine_type="fan", machine_id="0")
    assert [r["machine_id"] for r in named.rows] == ["00"] and not named.failures
    expected = 1 if any(row["decision"] for row in score_recordings(model, good).rows) else 0
    assert main(["score", "--checkpoint", str(model), *good]) == expected  # 1: some recording is anomalous


def test_a_damaged_model_file_is_one_line_naming_it(trained, toy_root, tmp_path, capsys):
    import shutil

    from rcmae.cli import main

    _, _, _, model = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    clip = sorted(str(p) for p in (toy_root / "dev_data" / "fan" / "test").glob("*.wav"))[0]
    assert main(["score", "--checkpoint", str(copy), clip]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rcmae ")]
    assert len(ours) == 1 and str(weights) in ours[0] and "damaged" in ours[0]
