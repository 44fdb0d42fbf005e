"""Run folders on an object store, against a real S3-compatible server the tests start on 127.0.0.1 (moto's
server mode): the working copy and the store kept equal, the one-writer lock (a conditional put) with its lease,
and `rcmae run --out s3://...` completing, refusing a second writer and resuming from the bucket."""

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from processes import stop_group
from rcmae.data.run_folder import FolderBusy, owned, staged, sync
from rcmae.stores import Mirror, StoreError, fetched, shared

BUCKET = "rcmae-test"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A moto S3 server on a free loopback port, with its endpoint and test credentials in the environment (as a
    user's AWS settings would be), and one bucket."""
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "RCMAE_STORE_CACHE": str(tmp_path_factory.mktemp("store-cache"))}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the moto server did not start"
                time.sleep(0.2)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        stop_group(server)


def keys(client, prefix: str) -> set[str]:
    """The objects under `prefix`, without the empty "folder/" markers pyarrow leaves where it deleted a folder's
    last file."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {item["Key"][len(prefix) + 1:] for page in pages for item in page.get("Contents", [])
            if not item["Key"].endswith("/")}


def test_the_store_is_made_equal_to_the_working_copy_and_back(s3_server, tmp_path):
    mirror = Mirror(f"s3://{BUCKET}/mirror", tmp_path / "work")
    (mirror.local / "model").mkdir(parents=True)
    (mirror.local / "model" / "weights.bin").write_bytes(b"w" * 1000)
    (mirror.local / "report.md").write_text("one")
    (mirror.local / ".rcmae.lock").write_text("{}")  # each side has its own lock
    (mirror.local / ".model.partial").mkdir()  # a set of outputs being written aside
    (mirror.local / ".model.partial" / "x").write_text("half")
    (mirror.local / "pretrain" / "ray_results").mkdir(parents=True)  # Ray Train writes these to the store itself
    (mirror.local / "pretrain" / "ray_results" / "local-only").write_text("r")
    assert mirror.push() == 2 and keys(s3_server, "mirror") == {"model/weights.bin", "report.md"}
    assert mirror.push() == 0  # nothing changed: nothing sent

    time.sleep(1.1)  # S3 keeps whole seconds
    (mirror.local / "report.md").write_text("two, longer")
    (mirror.local / "model" / "weights.bin").unlink()
    assert mirror.push() == 1 and keys(s3_server, "mirror") == {"report.md"}
    assert s3_server.get_object(Bucket=BUCKET, Key="mirror/report.md")["Body"].read() == b"two, longer"

    other = Mirror(mirror.uri, tmp_path / "elsewhere")
    (other.local).mkdir()
    (other.local / "stale.txt").write_text("not in the store")
    assert other.pull() == 1 and other.pull() == 0
    assert sorted(p.name for p in other.local.rglob("*") if p.is_file()) == ["report.md"]
    assert (other.local / "report.md").read_text() == "two, longer"


def test_a_store_folder_is_fetched_for_reading_and_named_by_its_uri(s3_server, tmp_path):
    mirror = Mirror(f"s3://{BUCKET}/model-a", tmp_path / "work")
    mirror.local.mkdir()
    (mirror.local / "meta.json").write_text("{}")
    mirror.push()
    copy = fetched(mirror.uri)
    assert (copy / "meta.json").read_text() == "{}" and fetched(mirror.uri) == copy  # one copy per version
    assert fetched(tmp_path) == tmp_path
    with pytest.raises(StoreError, match="nothing there"):
        fetched(f"s3://{BUCKET}/no-such-model")
    with staged(mirror.uri, "test") as local:
        assert shared(local / "pretrain" / "ray_results") == f"{mirror.uri}/pretrain/ray_results"
    assert shared(tmp_path / "x") == str(tmp_path / "x")


def test_clips_in_a_working_copy_are_read_from_the_store_by_other_nodes(s3_server, toy_root, tmp_path):
    import pandas as pd

    from rcmae.augment.featurize import read_batch
    from rcmae.config import tiny
    from rcmae.stores import relocated

    with staged(f"s3://{BUCKET}/clips", "test") as local:
        clips = sorted((toy_root / "dev_data" / "valve" / "train").glob("*.wav"))[:2]
        for clip in clips:
            (local / "data").mkdir(exist_ok=True)
            shutil.copy(clip, local / "data" / clip.name)
        sync(local)
        source = relocated(local / "data")
        paths = [str(local / "data" / clip.name) for clip in clips] + [str(local / "data" / "gone.wav")]
        (local / "data" / clips[0].name).unlink()  # not on this disk any more: read from the store
        rows = read_batch(pd.DataFrame({"path": paths}), tiny().audio, source)
    here = read_batch(pd.DataFrame({"path": [str(c) for c in clips]}), tiny().audio)
    for got, want in zip(rows["wave"][:2], here["wave"]):
        np.testing.assert_array_equal(got, want)
    assert rows["wave"][2] is None and f"cannot read it from {source.uri}" in rows["error"][2]


def test_force_clears_what_ray_train_wrote_to_the_store(s3_server):
    from rcmae.stores import clear

    s3_server.put_object(Bucket=BUCKET, Key="forced/pretrain/ray_results/pretrain/checkpoint_0/w", Body=b"w")
    s3_server.put_object(Bucket=BUCKET, Key="forced/pretrain/settings.json", Body=b"{}")
    with staged(f"s3://{BUCKET}/forced", "test") as local:
        assert not (local / "pretrain" / "ray_results").exists()  # never pulled: Ray reads it from the store
        clear(local / "pretrain" / "ray_results")
        clear(local / "pretrain" / "settings.json")
    assert keys(s3_server, "forced") == set()


def test_one_writer_per_store_folder_and_a_lost_writers_lock_is_taken_over(s3_server, monkeypatch, caplog):
    uri = f"s3://{BUCKET}/locked"
    with owned(uri, "first"):
        assert json.loads(s3_server.get_object(Bucket=BUCKET, Key="locked/.rcmae.lock")["Body"].read())["what"] == \
            "first"
        with pytest.raises(FolderBusy, match=f"{uri} is being written by first"):
            with owned(uri, "second"):
                pass
    assert "locked/.rcmae.lock" not in {o["Key"] for o in s3_server.list_objects_v2(Bucket=BUCKET).get("Contents", [])}

    # a lease of 4 s: S3 keeps whole seconds, so a fresh lock may already read as up to a second old
    lost = {"host": "lost-node-7", "pid": 1, "started": "yesterday", "what": "rcmae run", "lease_s": 4, "token": "t"}
    s3_server.put_object(Bucket=BUCKET, Key="locked/.rcmae.lock", Body=json.dumps(lost).encode())
    with pytest.raises(FolderBusy, match="lost-node-7"):
        with owned(uri, "second"):
            pass
    time.sleep(5.1)  # past its lease
    with owned(uri, "second"):
        pass
    assert "taking over the lock of rcmae run (host lost-node-7" in caplog.text


def test_a_run_that_fails_keeps_what_it_finished_in_the_store(s3_server):
    with pytest.raises(RuntimeError, match="stage 2 broke"):
        with staged(f"s3://{BUCKET}/failed", "test") as local:
            (local / "augment").mkdir()
            (local / "augment" / "summary.json").write_text("{}")
            raise RuntimeError("stage 2 broke")
    assert keys(s3_server, "failed") == {"augment/summary.json"}  # and the lock released
    with owned(f"s3://{BUCKET}/failed", "next"):
        pass


def test_a_file_uri_is_a_store_folder_too(tmp_path, monkeypatch):
    monkeypatch.setenv("RCMAE_STORE_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "shared" / "run"
    with staged(f"file://{target}", "test") as local:
        assert (target / ".rcmae.lock").is_file() and local != target
        (local / "report.md").write_text("done")
    assert (target / "report.md").read_text() == "done" and not (target / ".rcmae.lock").exists()
    assert (fetched(f"file://{target}") / "report.md").read_text() == "done"


def test_a_missing_bucket_is_one_clear_error(s3_server):
    with pytest.raises(StoreError, match="s3://no-such-bucket/run/.rcmae.lock: .*NoSuchBucket"):
        with staged("s3://no-such-bucket/run", "test"):
            pass


def test_stores_rcmae_cannot_lock_are_refused_by_name(tmp_path):
    from rcmae.data.run_folder import lock_for

    with pytest.raises(StoreError, match="refuses gs:// rather than share a folder"):
        lock_for("gs://bucket/run")
    with pytest.raises(StoreError, match="rcmae reads and writes s3://, gs://, file:// URIs"):
        Mirror.of("hdfs://name/run")
    assert lock_for(f"file://{tmp_path}").path == tmp_path / ".rcmae.lock"


def run_job(out: str, cache: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, RCMAE_STORE_CACHE=str(cache), RCMAE_LOCK_LEASE_S="4", RCMAE_PROGRESS="0")
    return subprocess.Popen([sys.executable, "-m", "rcmae.cli", "run", "--out", out, "--synth-types", "valve",
                             "--no-baseline", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1",
                             "--set", "augment.variants=1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.ray
def test_the_main_job_runs_in_a_bucket_refuses_a_second_writer_and_resumes_from_it(s3_server, tmp_path):
    uri = f"s3://{BUCKET}/runs/main"
    first = run_job(uri, tmp_path / "cache-a")
    lines = []
    for line in first.stdout:
        lines.append(line)
        if "[pretrain]" in line:  # the augmentation finished and was sent to the store
            break
    assert first.poll() is None, "".join(lines)
    second = run_job(uri, tmp_path / "cache-b")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 2 and f"{uri} is being written by rcmae run" in output, output
    os.killpg(first.pid, signal.SIGKILL)  # a lost driver: no release, no last push
    first.wait(timeout=60)
    stored = keys(s3_server, "runs/main")
    assert "augment/summary.json" in stored and "report.md" not in stored

    time.sleep(5)  # past the lost driver's lease
    shutil.rmtree(tmp_path / "cache-a")  # as on another machine (with the same cache path): an empty working copy
    resumed = run_job(uri, tmp_path / "cache-a")
    output, _ = resumed.communicate(timeout=1200)
    assert resumed.returncode == 0, output
    assert "taking over the lock of rcmae run" in output, output
    assert re.search(r"augment: (\d+) clips, \1 already done, 0 to process", output), [
        line for line in output.splitlines() if "augment" in line]
    stored = keys(s3_server, "runs/main")
    assert {"report.md", "run.json", "evaluation/metrics.json", "finetune/model/meta.json",
            "finetune/model/detector.safetensors", "augment/features"} - stored - {"augment/features"} == set()
    assert any(key.startswith("augment/features/") for key in stored)
    assert any(key.startswith("pretrain/ray_results/") for key in stored)  # Ray Train's checkpoints, in the bucket
    assert ".rcmae.lock" not in stored
    work = Mirror.of(uri).local.relative_to(Path(os.environ["RCMAE_STORE_CACHE"]))
    local = tmp_path / "cache-a" / work
    stored_metrics = s3_server.get_object(Bucket=BUCKET, Key="runs/main/evaluation/metrics.json")["Body"].read()
    assert json.loads(stored_metrics) == json.loads((local / "evaluation" / "metrics.json").read_text())
    assert f"-> {uri}/report.md" in output

    clips = sorted(str(p) for p in (local / "data").rglob("*.wav"))[:3]
    from_bucket, from_folder = (subprocess.run(
        [sys.executable, "-m", "rcmae.cli", "score", "--checkpoint", checkpoint, *clips], capture_output=True,
        text=True, env=dict(os.environ, RCMAE_STORE_CACHE=str(tmp_path / "cache-d"))) for checkpoint in (
        f"{uri}/finetune/model", str(local / "finetune" / "model")))
    assert from_bucket.returncode == from_folder.returncode and from_bucket.returncode != 2, from_bucket.stderr
    bucket_rows, folder_rows = (list(csv.DictReader(io.StringIO(run.stdout))) for run in (from_bucket, from_folder))
    assert len(bucket_rows) == 3 and [r["decision"] for r in bucket_rows] == [r["decision"] for r in folder_rows]
    assert [float(r["score"]) for r in bucket_rows] == pytest.approx([float(r["score"]) for r in folder_rows], rel=1e-5)


@pytest.mark.slow
@pytest.mark.ray
def test_each_stage_command_reads_and_writes_store_folders(s3_server, ray_session, tmp_path, capsys):
    from rcmae.cli import main
    from rcmae.data.synth import synthesize
    from rcmae.evaluate.results import evaluate_checkpoint

    data = tmp_path / "data"
    synthesize(data, preset="small", seed=1, types=("valve",))
    uri = f"s3://{BUCKET}/steps"
    quick = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--set", "scale.num_workers=0"]
    assert main(["augment", "--data", str(data), "--out", f"{uri}/augment", "--variants", "1"]) == 0
    assert main(["pretrain", "--features", f"{uri}/augment/features", "--out", f"{uri}/pretrain", *quick]) == 0
    assert f"stage 1 done: {uri}/pretrain/model" in capsys.readouterr().out
    assert main(["finetune", "--features", f"{uri}/augment/features", "--pretrained", f"{uri}/pretrain/model",
                 "--out", f"{uri}/finetune", *quick]) == 0
    assert main(["evaluate", "--checkpoint", f"{uri}/finetune/model", "--features", f"{uri}/augment/features",
                 "--out", f"{uri}/evaluation"]) == 0
    stored = keys(s3_server, "steps")
    assert {"augment/summary.json", "pretrain/model/meta.json", "finetune/model/detector.safetensors",
            "evaluation/metrics.json"} <= stored and not any(key.endswith(".rcmae.lock") for key in stored)
    meta = json.loads(s3_server.get_object(Bucket=BUCKET, Key="steps/finetune/model/meta.json")["Body"].read())
    assert meta["pretrained_from"] == f"{uri}/pretrain/model"  # what a worker on any node loads
    local = evaluate_checkpoint(fetched(f"{uri}/finetune/model"), None, tmp_path / "evaluation",
                                features_dir=fetched(f"{uri}/augment/features"))
    stored_metrics = json.loads(s3_server.get_object(Bucket=BUCKET, Key="steps/evaluation/metrics.json")["Body"].read())
    assert stored_metrics["mean"] == pytest.approx(local.mean, rel=1e-5)


@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_runs_in_a_bucket_and_resumes_from_it(s3_server, toy_root, toy_features, tmp_path):
    space = tmp_path / "bucket.yaml"
    space.write_text("name: bucket\npreset: tiny\nmax_concurrent_trials: 1\nset:\n  pretrain.epochs: 1\n"
                     "  finetune.epochs: 1\n  scale.num_workers: 0\nparams:\n  model.mask_ratio: {grid: [0.5, 0.7]}\n")
    features = Mirror(f"s3://{BUCKET}/sweep-features", toy_features)
    features.push()
    uri = f"s3://{BUCKET}/sweeps"
    env = dict(os.environ, RCMAE_STORE_CACHE=str(tmp_path / "cache"), RCMAE_PROGRESS="0")
    args = [sys.executable, "-m", "rcmae.cli", "tune", "--space", str(space), "--features", features.uri,
            "--data", str(toy_root / "dev_data" / "valve"), "--out", uri]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"wrote {uri}/bucket/trials.csv" in first.stdout
    stored = keys(s3_server, "sweeps/bucket")
    assert {"trials.csv", "trials.parquet", "best.json", "comparison.png", "space.json"} <= stored
    assert any(key.startswith("ray_results/bucket/") for key in stored)  # Tune's own files, in the bucket
    trials = list(csv.DictReader(io.StringIO(s3_server.get_object(
        Bucket=BUCKET, Key="sweeps/bucket/trials.csv")["Body"].read().decode())))
    assert len(trials) == 2 and all(row["model"].startswith(f"{uri}/bucket/trials/") for row in trials)
    in_bucket = keys(s3_server, "sweeps")
    models = [f"sweeps/{row['model'][len(uri) + 1:]}/meta.json" for row in trials]
    assert all(key[len("sweeps/"):] in in_bucket for key in models)  # each model where trials.csv says

    def written() -> list:
        return [s3_server.head_object(Bucket=BUCKET, Key=key)["LastModified"] for key in models]

    before = written()

    shutil.rmtree(tmp_path / "cache")  # another machine: nothing local
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "tune: resuming bucket" in again.stdout + again.stderr
    assert written() == before  # finished trials are kept, not trained again
    rerun = list(csv.DictReader(io.StringIO(s3_server.get_object(
        Bucket=BUCKET, Key="sweeps/bucket/trials.csv")["Body"].read().decode())))
    assert sorted((r["trial_id"], r["auc"]) for r in rerun) == sorted((r["trial_id"], r["auc"]) for r in trials)
