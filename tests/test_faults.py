"""Nothing lost, nothing silently wrong: one writer per run folder, folders that remember their settings,
readers that wait for a finished augmentation."""

import json
import os
import socket
import subprocess
import sys

import pytest

from rcmae.config import tiny
from rcmae.data.run_folder import LOCK, FolderBusy, SettingsChanged, owned
from rcmae.models.checkpoint import load_checkpoint

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def small_data(toy_root, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("valve") / "data"
    shutil.copytree(toy_root / "dev_data" / "valve", root / "dev_data" / "valve")
    return root


def config(**extra):
    return tiny().override({"augment.augmenter": "specaugment", "augment.variants": 1, **extra})


def hold_lock(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": "now",
                                           "what": "rcmae augment"}))


def test_a_second_writer_fails_at_once_naming_the_owner(ray_session, small_data, tmp_path):
    from rcmae.distributed.augment_pipeline import run_augment

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hold_lock(tmp_path / "out", owner.pid)
        with pytest.raises(FolderBusy, match=f"pid {owner.pid}"):
            run_augment(small_data, tmp_path / "out", config())
        assert not (tmp_path / "out" / "features").exists()  # nothing written beside the owner
    finally:
        owner.kill()
        owner.wait()
    summary = run_augment(small_data, tmp_path / "out", config())  # the owner is gone: its lock is stale
    assert summary["clips"] == 162 and not (tmp_path / "out" / LOCK).exists()


def test_training_refuses_features_whose_augmentation_is_still_running(small_data, tmp_path):
    from rcmae.train.setup import pretrain_start

    hold_lock(tmp_path / "augment", os.getpid())
    (tmp_path / "augment" / "features").mkdir()
    with pytest.raises(ValueError, match="augmentation has not finished"):
        pretrain_start(config(), tmp_path / "augment" / "features")


def test_a_rerun_with_other_settings_stops_naming_them_and_force_redoes(ray_session, small_data, tmp_path):
    from rcmae.distributed.augment_pipeline import run_augment

    run_augment(small_data, tmp_path / "out", config())
    with pytest.raises(SettingsChanged, match=r"variants.*1.*2.*new --out, or --force"):
        run_augment(small_data, tmp_path / "out", config(**{"augment.variants": 2}))
    summary = run_augment(small_data, tmp_path / "out", config(**{"augment.variants": 2}), force=True)
    assert summary["variants_per_clip"] == 2 and summary["augmented_variants"] == 2 * 90
    assert run_augment(small_data, tmp_path / "out", config(**{"augment.variants": 2}))["clips"] == 162


def test_a_stage_made_with_other_settings_is_not_reused_silently(toy_features, quick_config, tmp_path):
    from rcmae.stages import pretrain

    made = quick_config.override({"pretrain.epochs": 1})
    model_dir = pretrain(made, toy_features, tmp_path)
    weights = (model_dir / "model.safetensors").read_bytes()
    assert pretrain(made, toy_features, tmp_path) == model_dir  # finished: returned as it is
    assert (model_dir / "model.safetensors").read_bytes() == weights
    with pytest.raises(SettingsChanged, match=r"pretrain: .*'tau': 0.05.*'tau': 0.2.*--force"):
        pretrain(made.override({"pretrain.tau": 0.2}), toy_features, tmp_path)
    assert (model_dir / "model.safetensors").read_bytes() == weights  # nothing touched
    redone = pretrain(made.override({"pretrain.tau": 0.2}), toy_features, tmp_path, force=True)
    assert load_checkpoint(redone).config.pretrain.tau == 0.2
    longer = pretrain(made.override({"pretrain.tau": 0.2, "pretrain.epochs": 2}), toy_features, tmp_path)
    assert [h["epoch"] for h in load_checkpoint(longer).meta["history"]] == [1, 2]  # more epochs: continued


def test_standalone_stage_commands_name_the_change_and_take_force(toy_features, tmp_path, capsys):
    from rcmae.cli import main

    base = ["pretrain", "--features", str(toy_features), "--out", str(tmp_path), "--set", "scale.num_workers=0",
            "--set", "pretrain.epochs=1", "--set", "pretrain.batch_size=32"]
    assert main(base) == 0
    assert main(base + ["--set", "model.mask_ratio=0.5"]) == 2
    assert "mask_ratio" in capsys.readouterr().err
    assert main(base + ["--set", "model.mask_ratio=0.5", "--force"]) == 0


def test_the_lock_is_released_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with owned(tmp_path, "test"):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK).exists()


def test_a_training_stage_owns_its_folder(tmp_path):
    from rcmae.stages import pretrain

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hold_lock(tmp_path / "pretrain", owner.pid)
        with pytest.raises(FolderBusy, match="pid"):
            pretrain(config(**{"scale.num_workers": 0}), tmp_path / "features", tmp_path / "pretrain")
    finally:
        owner.kill()
        owner.wait()
