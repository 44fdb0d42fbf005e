"""TensorBoard event files, read back with TensorBoard's own reader: both stages' loss terms under the paper's
equation numbers, one step per epoch, a resumed stage going on at its next epoch, and the final per-type metrics.
MLflow: the same numbers in a run on a real tracking server (SQLite backend) started on 127.0.0.1, read back with
MlflowClient."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from processes import stop_group
from rcmae import stages, tracking
from scores import same_score


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_both_stages_and_the_evaluation_write_their_curves(toy_features, quick_config, tmp_path):
    from rcmae.evaluate.results import evaluate_checkpoint
    from rcmae.models.checkpoint import read_meta

    first = quick_config.override({"pretrain.epochs": 1})
    stages.pretrain(first, toy_features, tmp_path / "pretrain")
    pretrained = stages.pretrain(quick_config, toy_features, tmp_path / "pretrain")  # resumed: epoch 2 only
    model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    stage1, stage2 = (scalars(tmp_path / name / tracking.FOLDER) for name in ("pretrain", "finetune"))
    assert {"pretrain/loss_eq8", "pretrain/contrastive_eq3", "pretrain/vcr_eq7", "pretrain/mae_eq2", "pretrain/lr",
            "pretrain/samples_per_second", "pretrain/z_std"} <= set(stage1)
    assert {"finetune/loss_eq10", "finetune/supcon_eq9", "finetune/ce", "finetune/accuracy"} <= set(stage2)
    history = read_meta(pretrained).history
    assert [step for step, _ in stage1["pretrain/loss_eq8"]] == [1, 2]
    assert [value for _, value in stage1["pretrain/loss_eq8"]] == pytest.approx([h["loss"] for h in history])
    assert [step for step, _ in stage2["finetune/loss_eq10"]] == [1, 2]
    metrics = evaluate_checkpoint(model, None, tmp_path / "evaluation", features_dir=toy_features)
    final = scalars(tmp_path / "evaluation" / tracking.FOLDER)
    assert final["evaluation/auc/mean"] == [(0, pytest.approx(metrics.mean["auc"]))]
    for machine_type, values in metrics.per_type.items():
        assert final[f"evaluation/pauc/{machine_type}"] == [(0, pytest.approx(values["pauc"]))]


def test_a_term_without_an_equation_keeps_its_name():
    assert tracking.tag("finetune", "ce") == "finetune/ce" and tracking.tag("pretrain", "vcr") == "pretrain/vcr_eq7"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the MLflow server did not start"
                time.sleep(0.5)
        yield uri
    finally:
        stop_group(server)


@pytest.mark.slow
def test_a_job_logs_params_epochs_and_final_metrics_to_an_mlflow_run(mlflow_server, toy_features, quick_config,
                                                                     tmp_path):
    from mlflow.tracking import MlflowClient

    from rcmae.evaluate.results import evaluate_checkpoint

    with tracking.mlflow_run(mlflow_server, "job", tracking.flat_params(quick_config.to_dict())) as target:
        pretrained = stages.pretrain(quick_config, toy_features, tmp_path / "pretrain")
        model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
        metrics = evaluate_checkpoint(model, None, tmp_path / "evaluation", features_dir=toy_features)
        tracking.log_artifacts(target, [tmp_path / "evaluation" / "metrics.json", model])
    assert tracking.active_mlflow() is None
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(target.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "job"
    assert run.data.params["pretrain.tau"] == str(quick_config.pretrain.tau)
    assert run.data.params["model.mask_ratio"] == str(quick_config.model.mask_ratio)
    history = client.get_metric_history(target.run_id, "pretrain/loss_eq8")
    assert sorted(m.step for m in history) == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(target.run_id, "finetune/supcon_eq9")) == [1, 2]
    assert run.data.metrics["evaluation/auc/mean"] == pytest.approx(metrics.mean["auc"])
    artifacts = {a.path for a in client.list_artifacts(target.run_id)}
    assert {"metrics.json", "model"} <= artifacts
    assert "meta.json" in {Path(a.path).name for a in client.list_artifacts(target.run_id, "model")}


def test_a_job_that_fails_leaves_its_mlflow_run_failed_in_the_experiment_mlflow_names(mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "plant-7")
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.mlflow_run(mlflow_server, "broken", {"a": "1"}) as target:
            raise RuntimeError("boom")
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(target.run_id)
    assert run.info.status == "FAILED" and client.get_experiment(run.info.experiment_id).name == "plant-7"


def test_the_detector_as_a_registered_mlflow_model_scores_as_rcmae_score_does(mlflow_server, finetuned_model,
                                                                              toy_root, capsys):
    import io

    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from rcmae import Detector
    from rcmae.cli import main
    from rcmae.mlflow_model import SIGNATURE, log_detector

    with tracking.mlflow_run(mlflow_server, "registered", {}) as target:
        uri = log_detector(target, finetuned_model, "rcmae-toy")
    versions = MlflowClient(tracking_uri=mlflow_server).search_model_versions("name = 'rcmae-toy'")
    assert [v.version for v in versions] == ["1"] and versions[0].run_id == target.run_id
    assert capsys.readouterr().out == ""  # stdout carries results only
    clips = sorted((toy_root / "dev_data" / "valve" / "test").glob("*.wav"))[::12]
    assert main(["score", "--checkpoint", str(finetuned_model), *map(str, clips)]) in (0, 1)
    expected = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("file")
    api = Detector.load(finetuned_model)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        for source in ("models:/rcmae-toy/1", uri):  # the registry's version, and the run's logged model
            model = mlflow.pyfunc.load_model(source)
            assert model.metadata.get_input_schema() == SIGNATURE.inputs
            answer = model.predict(pd.DataFrame({"path": [str(c) for c in clips]}))  # machines from the names
            assert list(answer.columns) == ["score", "decision", "threshold"] and len(answer) == len(clips) > 1
            for clip, row in zip(clips, answer.itertuples()):
                alone = api.score_file(clip)  # the Python API, as the pyfunc model calls it
                assert row.threshold == alone.threshold  # float32 encoder passes: scores to round-off
                assert row.score == same_score(alone.score)
                assert row.score == same_score(expected.loc[str(clip), "score"])
                assert int(row.decision) == expected.loc[str(clip), "decision"] == int(alone.decision)
    finally:
        mlflow.set_tracking_uri(None)


def test_mlflow_tracking_without_a_server_uri_is_one_line(capsys, monkeypatch):
    from rcmae.cli import main
    from rcmae.errors import EXIT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["run", "--tracking", "mlflow", "--out", "unused"]) == EXIT.user_error
    assert "--tracking mlflow needs the MLflow server: --tracking-uri URI, or MLFLOW_TRACKING_URI" in (
        capsys.readouterr().err)
    assert main(["run", "--tracking-uri", "http://127.0.0.1:5000", "--out", "unused"]) == EXIT.user_error
    assert "--tracking-uri URI needs --tracking mlflow" in capsys.readouterr().err
    assert main(["run", "--register", "plant-7", "--out", "unused"]) == EXIT.user_error
    assert "--register NAME registers the model in MLflow's registry: add --tracking mlflow" in (
        capsys.readouterr().err)


def test_mlflows_own_environment_variables_name_the_server_and_the_experiment(monkeypatch):
    import argparse

    from rcmae.commands import mlflow_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "plant-7")
    assert mlflow_uri(argparse.Namespace(tracking="mlflow", tracking_uri=None)) == "http://127.0.0.1:5999"
    assert mlflow_uri(argparse.Namespace(tracking="mlflow", tracking_uri="http://h:1")) == "http://h:1"  # the flag wins
    assert mlflow_uri(argparse.Namespace(tracking="tensorboard", tracking_uri=None)) is None
    assert tracking.experiment_name() == "plant-7" and tracking.experiment_name("rcmae-tune-x") == "plant-7"
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert tracking.experiment_name() == "rcmae"


@pytest.mark.slow
@pytest.mark.ray
def test_rcmae_run_with_mlflow_tracking_logs_the_whole_job_and_a_fresh_untracked_run_matches_it(
        ray_session, mlflow_server, tmp_path):
    """The main job twice from scratch on the same data on Ray (augmentation actors, Ray Train with two workers, Ray
    Data scoring), the first tracked: Ray writes the shards in its own order each time, and neither they, the
    tracking nor the metrics may notice."""
    import json

    from mlflow.tracking import MlflowClient

    from rcmae.cli import main
    from rcmae.data.synth import synthesize

    data = tmp_path / "data"
    synthesize(data, preset="small", seed=1, types=("valve",))
    quick = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--set", "augment.variants=1",
             "--set", "scale.num_workers=2"]
    out = tmp_path / "whole_job"  # the MLflow run's name
    assert main(["run", "--data", str(data), "--out", str(out), "--no-baseline", "--tracking", "mlflow",
                 "--tracking-uri", mlflow_server, *quick]) == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("rcmae").experiment_id
    [run] = client.search_runs([experiment], "attributes.run_name = 'whole_job'")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pretrain/loss_eq8")] == [1]  # rank 0 only
    assert {"report.md", "metrics.json", "model"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert run.data.metrics["evaluation/auc/valve"] == pytest.approx(metrics["per_type"]["valve"]["auc"])

    again = tmp_path / "again"
    assert main(["run", "--data", str(data), "--out", str(again), "--no-baseline", *quick]) == 0
    assert sorted(p.name for p in (out / "augment" / "features").glob("*.parquet")) == sorted(
        p.name for p in (again / "augment" / "features").glob("*.parquet"))
    metrics_again = json.loads((again / "evaluation" / "metrics.json").read_text())
    assert metrics_again["per_id"] == metrics["per_id"] and metrics_again["mean"] == metrics["mean"]


@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_with_mlflow_tracking_makes_one_mlflow_run_per_trial(ray_session, mlflow_server, toy_root,
                                                                     toy_features, tmp_path):
    from mlflow.tracking import MlflowClient

    from rcmae.cli import main

    space = tmp_path / "tracked.yaml"
    space.write_text("name: tracked\npreset: tiny\nset:\n  pretrain.epochs: 1\n  finetune.epochs: 1\n"
                     "  scale.num_workers: 0\nparams:\n  model.mask_ratio: {grid: [0.6, 0.7]}\n")
    assert main(["tune", "--space", str(space), "--features", str(toy_features), "--data",
                 str(toy_root / "dev_data" / "valve"), "--out", str(tmp_path / "out"), "--tracking", "mlflow",
                 "--tracking-uri", mlflow_server]) == 0
    trials = pd.read_csv(tmp_path / "out" / "tracked" / "trials.csv").set_index("config/model.mask_ratio")
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("rcmae-tune-tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:
        ratio = float(run.data.params["model.mask_ratio"])
        assert run.data.metrics["auc"] == pytest.approx(trials.loc[ratio, "auc"])  # the trial's final AUC
        assert run.data.metrics["auc_valve"] == pytest.approx(trials.loc[ratio, "auc_valve"])
        assert run.data.tags["rcmae.sweep"] == "tracked"
