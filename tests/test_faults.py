"""Nothing lost, nothing silently wrong: one writer per run folder, folders that remember their settings,
readers that wait for a finished augmentation."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import torch

from rcmae.config import tiny
from rcmae.data.run_folder import LOCK, FolderBusy, SettingsChanged, lock_owner, owned
from rcmae.errors import DataError, RcmaeError
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
    with pytest.raises(DataError, match="augmentation has not finished"):
        pretrain_start(config().augment, tmp_path / "augment" / "features")


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
    assert [h["epoch"] for h in load_checkpoint(longer).meta.history] == [1, 2]  # more epochs: continued


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


def foreign_lock(folder, heartbeat_age_s: float, lease_s: float = 60):
    """A lock written by a process on a host that no longer exists, last renewed `heartbeat_age_s` ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    path.write_text(json.dumps({"host": "lost-node-7", "pid": 4242, "started": "2026-11-30 08:00:00",
                                "what": "rcmae augment", "lease_s": lease_s, "token": "theirs"}))
    then = time.time() - heartbeat_age_s
    os.utime(path, (then, then))
    return path


def test_a_lock_from_a_lost_host_is_taken_over_once_its_lease_ran_out(tmp_path, caplog):
    foreign_lock(tmp_path, heartbeat_age_s=30)  # within its lease: the holder may still run
    with pytest.raises(FolderBusy, match="lost-node-7"):
        with owned(tmp_path, "test"):
            pass
    foreign_lock(tmp_path, heartbeat_age_s=90)  # past its 60 s lease
    with caplog.at_level("WARNING", logger="rcmae.data.run_folder"):
        with owned(tmp_path, "test"):
            mine = json.loads((tmp_path / LOCK).read_text())
            assert mine["host"] == socket.gethostname() and mine["pid"] == os.getpid()
    assert "lost-node-7" in caplog.text and "pid 4242" in caplog.text and "past its 60 s lease" in caplog.text
    assert not (tmp_path / LOCK).exists()


def test_a_held_lock_keeps_its_heartbeat_and_is_not_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("RCMAE_LOCK_LEASE_S", "0.4")
    with owned(tmp_path, "test"):
        path = tmp_path / LOCK
        long_ago = time.time() - 100
        os.utime(path, (long_ago, long_ago))
        time.sleep(0.5)  # a quarter-lease heartbeat renews it
        assert time.time() - path.stat().st_mtime < 0.4
        assert lock_owner(tmp_path)["pid"] == os.getpid()
        with pytest.raises(FolderBusy):
            with owned(tmp_path, "second"):
                pass
    monkeypatch.setenv("RCMAE_LOCK_LEASE_S", "soon")
    with pytest.raises(RcmaeError, match="RCMAE_LOCK_LEASE_S"):
        with owned(tmp_path, "test"):
            pass


def test_a_half_written_lock_is_busy_at_first_and_stale_later(tmp_path):
    path = tmp_path / LOCK
    path.write_text("")  # a writer between creating the file and writing its record
    assert lock_owner(tmp_path) is not None
    then = time.time() - 60
    os.utime(path, (then, then))  # still empty a minute later: left by a crash
    assert lock_owner(tmp_path) is None


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


# ---------------------------------------------------------------- chaos drill: processes killed mid-run
def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def our_ray_processes(title: str) -> list[int]:
    """Live processes of this test's Ray instance whose title (Ray sets `ray::<actor class>`) names `title`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::") and title in command and descends_from(int(entry), os.getpid()):
            found.append(int(entry))
    return found


class KillWhen(threading.Thread):
    """SIGKILLs one process titled `title` as soon as `ready()` holds: a crash in the middle of a run."""

    def __init__(self, title: str, ready):
        super().__init__(daemon=True)
        self.title, self.ready, self.killed, self.done = title, ready, None, threading.Event()

    def run(self):
        while not self.done.is_set():
            pids = our_ray_processes(self.title) if self.ready() else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                self.killed = pids[0]
                return
            time.sleep(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def sorted_rows(out):
    return pq.read_table(out / "features").sort_by("path").to_pylist()


@pytest.mark.slow
def test_chaos_an_augmentation_actor_killed_mid_run_loses_and_repeats_nothing(ray_session, small_data, tmp_path):
    from rcmae.distributed.augment_pipeline import run_augment

    drill = config(**{"augment.batch_size": 2})
    whole = run_augment(small_data, tmp_path / "whole", drill)
    shards = tmp_path / "chaos" / "features"
    with KillWhen("AugmentActor", lambda: shards.exists() and any(shards.glob("*.parquet"))) as killer:
        chaos = run_augment(small_data, tmp_path / "chaos", drill)
    assert killer.killed is not None  # the actor did die mid-run
    run_dependent = ("seconds", "actors")  # actors: how many ran, the killed one's replacement included
    assert ({k: v for k, v in chaos.items() if k not in run_dependent}
            == {k: v for k, v in whole.items() if k not in run_dependent})
    a, b = sorted_rows(tmp_path / "whole"), sorted_rows(tmp_path / "chaos")
    assert [r["path"] for r in a] == [r["path"] for r in b]  # every clip once: nothing lost, nothing twice
    for x, y in zip(a, b):
        assert x["features"] == y["features"] and x["augmented"] == y["augmented"] and x["error"] == y["error"]


@pytest.mark.slow
def test_chaos_a_ray_train_worker_killed_mid_run_is_replaced_a_longer_rerun_resumes_and_fine_tunes(
        ray_session, toy_features, quick_config, tmp_path):
    """Two Ray Train workers: one killed after the first checkpoint is replaced and the run ends at its epochs; the
    same run again with one epoch more trains that epoch only; stage 2 follows on the same two workers."""
    from rcmae.distributed.train import finetune_ray, pretrain_ray

    drill = quick_config.override({"scale.num_workers": 2, "scale.cpus_per_worker": 0.5, "pretrain.epochs": 2,
                                   "finetune.epochs": 1})
    out = tmp_path / "pretrain"
    with KillWhen("RayTrainWorker", lambda: any((out / "ray_results").rglob("checkpoint_*"))) as killer:
        model = pretrain_ray(drill, toy_features, out)
    assert killer.killed is not None
    # resumed from its checkpoint: no epoch lost or repeated
    assert [h["epoch"] for h in load_checkpoint(model).meta.history] == [1, 2]
    longer = drill.override({"pretrain.epochs": 3})
    pretrained = pretrain_ray(longer, toy_features, out)  # same run name: epoch 3 only
    assert [h["epoch"] for h in load_checkpoint(pretrained).meta.history] == [1, 2, 3]
    meta = load_checkpoint(finetune_ray(longer, toy_features, pretrained, tmp_path / "finetune")).meta
    assert meta.stage == "finetune" and meta.epoch == 1 and meta.detector is not None


@pytest.mark.slow
def test_chaos_a_trainer_killed_mid_run_then_rerun_equals_an_uninterrupted_run(toy_features, tmp_path):
    """The in-process trainer is deterministic, so the resumed model must be the uninterrupted one bit for bit,
    and the evaluation from it the same."""
    from rcmae.cli import main

    def command(out):
        return [sys.executable, "-m", "rcmae.cli", "--log-level", "warning", "pretrain", "--features",
                str(toy_features), "--out", str(out), "--set", "scale.num_workers=0", "--set", "pretrain.epochs=3",
                "--set", "pretrain.batch_size=32"]

    subprocess.run(command(tmp_path / "whole"), check=True)
    trainer = subprocess.Popen(command(tmp_path / "chaos"))
    first = tmp_path / "chaos" / "checkpoints" / "epoch_0001"
    while not first.exists() and trainer.poll() is None:
        time.sleep(0.05)
    trainer.send_signal(signal.SIGKILL)
    assert trainer.wait() == -signal.SIGKILL  # killed before it finished
    assert not (tmp_path / "chaos" / "model").exists()
    subprocess.run(command(tmp_path / "chaos"), check=True)  # the re-run resumes after epoch 1
    whole, chaos = load_checkpoint(tmp_path / "whole" / "model"), load_checkpoint(tmp_path / "chaos" / "model")
    assert [h["epoch"] for h in chaos.meta.history] == [1, 2, 3]
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, chaos.model.state_dict()[name]), name
    for out in ("whole", "chaos"):
        assert main(["finetune", "--features", str(toy_features), "--pretrained", str(tmp_path / out / "model"),
                     "--out", str(tmp_path / out / "ft"), "--set", "scale.num_workers=0", "--set",
                     "finetune.epochs=1", "--set", "finetune.batch_size=32"]) == 0
        assert main(["evaluate", "--checkpoint", str(tmp_path / out / "ft" / "model"), "--features",
                     str(toy_features), "--out", str(tmp_path / out / "eval")]) == 0
    metrics = [json.loads((tmp_path / out / "eval" / "metrics.json").read_text())["mean"] for out in ("whole", "chaos")]
    assert metrics[0] == pytest.approx(metrics[1], abs=1e-9)
