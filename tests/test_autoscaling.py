"""Plans that ask for GPUs make an autoscaler add GPU nodes; plans no node type can meet fail at once; a GPU pool
grows to its maximum as the autoscaler adds nodes.
Simulated with Ray's fake multi-node provider in a separate process (it stops every Ray on the machine, so
this runs with the end-to-end tests, after the session's Ray is shut down)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_gpu_actors_get_autoscaled_gpu_nodes_and_impossible_plans_fail(tmp_path, no_local_ray):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("autoscaling_scenario.py")), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{\"gpus_at_start")))
    assert result["gpus_at_start"] == 0  # the plan asked for what the cluster did not have yet
    assert result["gpu_nodes"] >= 1 and result["actor_nodes_with_gpu"] and result["clips"] == 8
    assert result["devices"] == ["cpu"]  # fake GPU nodes have no CUDA: the actors fall back to the CPU
    assert "no node of this cluster" in result["never"] and "'GPU': 2" in result["never"]
    # the elastic pool started with no GPU node and grew to its 3 actors, one per node, as nodes arrived
    assert result["gpus_before_growth"] == 0 and result["grown_clips"] == 96
    assert result["grown_actors"] == 3 and result["grown_nodes"] == 3
