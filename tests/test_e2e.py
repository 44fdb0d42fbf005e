"""End to end as a user runs it: `ray start --head` (token auth), `ray job submit ... jobs/pipeline.py` (with the
token; without it the job is refused), `ray stop`."""

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dcase_files import assert_metrics_match_score_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray(*args, env, timeout=600):
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


OWN_INSTANCE = """
import ray
from rcmae.distributed.runtime import ensure_ray

ensure_ray(1)


@ray.remote(num_cpus=0)
class Probe:
    def ping(self):
        return 1


def state_of(actor_id):
    from ray.util.state import get_actor

    found = get_actor(actor_id)
    return found.state if found else "UNKNOWN"


probe = Probe.remote()
ray.get(probe.ping.remote())
print(ray.get_runtime_context().gcs_address)
print(ray.get(ray.remote(num_cpus=0)(state_of).remote(probe._actor_id.hex())))
"""


def test_job_submit_runs_the_main_job(tmp_path, no_local_ray):
    port, dashboard = free_port(), free_port()
    # Ray >= 2.59 asks local clusters for a token: the CLI calls below share one through the environment
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.pop("RAY_ADDRESS", None)
    started = ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                  f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                  "--disable-usage-stats", env=env)
    assert started.returncode == 0, started.stderr
    out = tmp_path / "run"
    try:
        # the head runs with token auth: a client without the token is refused, and nothing runs
        home = tmp_path / "home"  # no ~/.ray/auth_token to fall back on
        home.mkdir()
        for mode in ("token", "disabled"):
            tokenless = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(home),
                                                                                 "RAY_AUTH_MODE": mode}
            refused = ray("job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--", "python", "-c",
                          f"open({str(tmp_path / 'ran')!r}, 'w')", env=tokenless, timeout=120)
            assert refused.returncode != 0, refused.stdout
            assert "token" in (refused.stdout + refused.stderr).lower(), refused.stdout + refused.stderr
        assert not (tmp_path / "ran").exists()
        job = ray("job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--working-dir", ".", "--",
                  "python", "jobs/pipeline.py", "--out", str(out), "--no-baseline",
                  "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", env=env, timeout=900)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in (job.stdout + job.stderr).lower(), job.stdout[-2000:] + job.stderr[-2000:]
        # without RAY_ADDRESS rcmae starts an instance of its own beside the running cluster (after the job, so
        # that its instance cannot disturb the job's), never joins it
        own = subprocess.run([sys.executable, "-c", OWN_INSTANCE], env=env, cwd=ROOT, text=True,
                             capture_output=True, timeout=300)
        assert own.returncode == 0, own.stderr[-2000:]
        gcs, state = own.stdout.split()
        assert not gcs.endswith(f":{port}"), own.stdout
        # its workers' state-API calls (Ray Train's placement-group cleaner makes them) reach its own dashboard,
        # not the cluster's: there its actors would be unknown, taken for dead, and their training stopped
        assert state == "ALIVE", own.stdout
    finally:
        ray("stop", env=env)
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert len(metrics["per_type"]) == 6
    assert_metrics_match_score_files(out / "evaluation", metrics)
    assert (out / "report.md").exists() and (out / "plots" / "roc.png").exists()
    report = (out / "report.md").read_text()
    assert "Preset `tiny` (rcmae's" in report and "| timing |" in report and "RC-MAE, `combined`" in report
    maps = sorted((out / "plots" / "maps").glob("*.png"))  # 3 top anomalies per type, each in the report
    assert len(maps) == 18 and all(f"(plots/maps/{m.name})" in report for m in maps)
    assert list((out / "augment" / "features").glob("*.parquet"))
    assert (out / "finetune" / "model" / "model.safetensors").exists()
