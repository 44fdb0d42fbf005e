"""Ray Train and Ray Tune on the local Ray instance (2 CPUs)."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from rcmae.models.checkpoint import read_meta

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_concurrent_trials_leave_room_for_each_trials_detector_fit():
    from rcmae.config import tiny
    from rcmae.distributed.tune import concurrent_trials

    one_worker = tiny().override({"scale.num_workers": 1}).scale  # 0.5 CPU per worker
    assert concurrent_trials(one_worker, {"CPU": 2.0}) == 1  # two would stall each other on a 2-core machine
    assert concurrent_trials(one_worker, {"CPU": 16.0}) == 10
    assert concurrent_trials(tiny().override({"scale.num_workers": 2, "scale.use_gpu": True}).scale,
                             {"CPU": 8.0, "GPU": 4.0}) == 2


def assert_each_trial_records_its_evaluation(trials: pd.DataFrame) -> None:
    """trials.csv's numbers are those of the trial's own evaluation, of a model made with the trial's mask ratio."""
    for _, trial in trials.iterrows():
        evaluated = json.loads((Path(trial["model"]).parents[1] / "evaluation" / "metrics.json").read_text())
        assert (trial["auc"], trial["pauc"], trial["auc_valve"]) == pytest.approx(
            (evaluated["mean"]["auc"], evaluated["mean"]["pauc"], evaluated["per_type"]["valve"]["auc"]))
        assert read_meta(trial["model"]).made_with().model.mask_ratio == trial["config/model.mask_ratio"]


def test_smoke_sweep_records_auc_and_pauc_per_trial(ray_session, toy_root, toy_features, tmp_path):
    from rcmae.sweep import run_sweep

    folder = run_sweep("tune_spaces/smoke.yaml", toy_features, toy_root / "dev_data" / "valve", tmp_path)
    trials = pd.read_csv(folder / "trials.csv")
    assert len(trials) == 2
    assert sorted(trials["config/model.mask_ratio"]) == [0.5, 0.75]
    assert_each_trial_records_its_evaluation(trials)
    assert (folder / "comparison.png").stat().st_size > 0
    assert "auc_valve" in trials.columns
    best = json.loads((folder / "best.json").read_text())
    assert best["auc"] == trials["auc"].max()
    # every trial's model lives in the sweep's folder (not Ray's session folder), so it outlives `ray stop`
    assert Path(best["model"]).is_relative_to(folder / "trials") and (Path(best["model"]) / "meta.json").exists()


def test_a_sweep_whose_driver_is_killed_resumes_without_retraining_finished_trials(ray_session, toy_root,
                                                                                  toy_features, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from rcmae.cli import main

    space = tmp_path / "resume.yaml"
    space.write_text("name: resume\npreset: tiny\nmax_concurrent_trials: 1\nset:\n  pretrain.epochs: 2\n"
                     "  finetune.epochs: 1\n  scale.num_workers: 0\n"
                     "params:\n  model.mask_ratio: {grid: [0.5, 0.7]}\n")
    args = ["tune", "--space", str(space), "--features", str(toy_features), "--data",
            str(toy_root / "dev_data" / "valve"), "--out", str(tmp_path / "out")]
    trials = tmp_path / "out" / "resume" / "trials"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    log = tmp_path / "driver.log"
    with log.open("w") as stderr:
        driver = subprocess.Popen([str(Path(sys.executable).parent / "rcmae"), *args], env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 600
        while not list(trials.glob("*/evaluation/metrics.json")) and time.time() < deadline:
            assert driver.poll() is None, "the sweep ended before it could be interrupted: " + log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # into the second trial
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished = {model: model.stat().st_mtime_ns for model in trials.glob("*/finetune/model/model.safetensors")}
    assert finished, "no trial had finished when the driver was killed: " + log.read_text()[-3000:]
    assert main(args) == 0  # the same command again: restored, not started over
    assert {model: model.stat().st_mtime_ns for model in finished} == finished  # finished trials not retrained
    results = pd.read_csv(tmp_path / "out" / "resume" / "trials.csv")
    assert sorted(results["config/model.mask_ratio"]) == [0.5, 0.7] and results["auc"].notna().all()
    assert len(list(trials.iterdir())) == 2  # the same two trial folders: none begun afresh under a new id
    space.write_text(space.read_text().replace("0.7]", "0.8]"))
    with pytest.raises(Exception, match=r"other settings \(params.model.mask_ratio: .*0.7.* there, .*0.8.* now\)"):
        from rcmae.sweep import run_sweep

        run_sweep(space, toy_features, toy_root / "dev_data" / "valve", tmp_path / "out")


def test_an_optuna_sweep_spends_its_budget_within_the_space(ray_session, toy_root, toy_features, tmp_path, caplog):
    from rcmae.cli import main

    space = tmp_path / "optuna.yaml"
    space.write_text("name: tpe\npreset: tiny\nsearch: optuna\nseed: 3\nnum_samples: 3\nmax_concurrent_trials: 1\n"
                     "set:\n  pretrain.epochs: 1\n  finetune.epochs: 1\n  scale.num_workers: 0\n"
                     "params:\n  model.mask_ratio: {uniform: [0.5, 0.8]}\n  pretrain.tau: {loguniform: [0.02, 0.3]}\n")
    assert main(["tune", "--space", str(space), "--features", str(toy_features), "--data",
                 str(toy_root / "dev_data" / "valve"), "--out", str(tmp_path / "out")]) == 0
    trials = pd.read_csv(tmp_path / "out" / "tpe" / "trials.csv")
    assert len(trials) == 3 and trials["auc"].notna().all() and trials["error"].isna().all()
    assert trials["config/model.mask_ratio"].between(0.5, 0.8).all()
    assert trials["config/pretrain.tau"].between(0.02, 0.3).all() and trials["config/pretrain.tau"].nunique() == 3
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nsearch: optuna\nparams:\n  model.mask_ratio: {grid: [0.5]}\n")
    with pytest.raises(Exception, match="search optuna draws its own points"):
        from rcmae.distributed.tune import load_space

        load_space(grid)


def test_in_process_trials_run_and_a_sweep_whose_trials_all_fail_says_so(ray_session, toy_root, toy_features,
                                                                         tmp_path, capsys):
    from rcmae.cli import main

    space = tmp_path / "inprocess.yaml"
    space.write_text("name: inprocess\npreset: tiny\nset:\n  pretrain.epochs: 1\n  finetune.epochs: 1\n"
                     "  scale.num_workers: 0\nparams:\n  model.mask_ratio: {grid: [0.6]}\n")
    assert main(["tune", "--space", str(space), "--features", str(toy_features), "--data",
                 str(toy_root / "dev_data" / "valve"), "--out", str(tmp_path / "ok")]) == 0
    trials = pd.read_csv(tmp_path / "ok" / "inprocess" / "trials.csv")
    assert len(trials) == 1 and trials["error"].isna().all()
    assert_each_trial_records_its_evaluation(trials)
    capsys.readouterr()
    empty = tmp_path / "no_test_clips"
    empty.mkdir()
    assert main(["tune", "--space", str(space), "--features", str(toy_features), "--data", str(empty),
                 "--out", str(tmp_path / "failed")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("rcmae tune: error: every trial failed (1)") and "trials.csv" in line
    failed = pd.read_csv(tmp_path / "failed" / "inprocess" / "trials.csv")
    assert len(failed) == 1 and "no DCASE-layout .wav clips found" in failed["error"][0]


def _interrupted(command: list[str], env: dict, started, deadline_s: float = 600) -> tuple[int, str]:
    """Runs `rcmae COMMAND`, sends SIGINT once `started()` holds, and returns its exit code and stderr."""
    import signal
    import subprocess
    import tempfile
    import time

    log = Path(tempfile.mkstemp(suffix=".log")[1])
    with log.open("w") as stderr:
        driver = subprocess.Popen([str(Path(sys.executable).parent / "rcmae"), *command], env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + deadline_s
        while not started() and time.time() < deadline:
            assert driver.poll() is None, "the command ended before it could be interrupted: " + log.read_text()[-3000:]
            time.sleep(0.5)
        assert started(), "the command did not get far enough to be interrupted: " + log.read_text()[-3000:]
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
        stderr = log.read_text()
        log.unlink()
    return driver.returncode, stderr


@pytest.mark.slow
def test_ctrl_c_during_ray_train_exits_130_with_the_rerun_line(ray_session, toy_features, tmp_path):
    """Ray Train V2's fit takes SIGINT over on the main thread (abort, later exit 0); rcmae runs it off the main
    thread, so Ctrl-C is rcmae's: exit 130 and the line saying that re-running continues."""
    import os

    out = tmp_path / "pretrain"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    command = ["pretrain", "--features", str(toy_features), "--out", str(out), "--set", "pretrain.epochs=200",
               "--set", "scale.num_workers=1", "--set", "pretrain.batch_size=32"]
    code, stderr = _interrupted(command, env, lambda: bool(list(out.glob("ray_results/pretrain/checkpoint_*"))))
    assert code == 130, stderr[-3000:]
    assert ("rcmae pretrain: interrupted (SIGINT); re-run the same command to continue"
            in stderr.splitlines()), stderr[-3000:]
    assert not (out / "model" / "model.safetensors").exists()  # no model published from a cut-short run


@pytest.mark.slow
def test_ctrl_c_during_a_sweep_exits_130_and_says_how_many_trials_finished(ray_session, toy_root, toy_features,
                                                                          tmp_path):
    import os

    space = tmp_path / "cut.yaml"
    space.write_text("name: cut\npreset: tiny\nmax_concurrent_trials: 1\nset:\n  pretrain.epochs: 1\n"
                     "  finetune.epochs: 1\n  scale.num_workers: 0\n"
                     "params:\n  model.mask_ratio: {grid: [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]}\n")
    trials = tmp_path / "out" / "cut" / "trials"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    command = ["tune", "--space", str(space), "--features", str(toy_features), "--data",
               str(toy_root / "dev_data" / "valve"), "--out", str(tmp_path / "out")]
    code, stderr = _interrupted(command, env, lambda: bool(list(trials.glob("*/evaluation/metrics.json"))))
    assert code == 130, stderr[-3000:]
    last = next(line for line in stderr.splitlines() if line.startswith("rcmae tune: "))
    assert last.startswith("rcmae tune: interrupted (the sweep stopped with ") and "of 6 started" not in last, last
    assert "trial(s) finished" in last and last.endswith("re-run the same command to continue"), last
    assert not (tmp_path / "out" / "cut" / "trials.csv").exists()  # no table of a sweep cut short
