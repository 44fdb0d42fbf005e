"""Each Ray internal rcmae uses (rcmae/distributed/ray_internals.py), checked against the installed Ray: an
upgrade that renames or moves one fails here, by name."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rcmae.distributed import ray_internals
from rcmae.distributed.runtime import LOOPBACK_ENV


def test_cluster_mode_is_the_constant_ray_reads_from_the_loopback_variable(monkeypatch):
    import ray._private.ray_constants as ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == LOOPBACK_ENV
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_internals.disable_cluster_mode()
    assert ray_constants.ENABLE_RAY_CLUSTER is False


@pytest.mark.ray
def test_a_local_instance_publishes_no_node_groups_and_its_monitor_no_config(ray_session):
    """A local instance runs an autoscaler monitor (it publishes its status) without a cluster YAML: no node type
    can be added."""
    import time

    from rcmae.distributed.runtime import autoscaler_node_types

    assert ray_internals.gcs_cluster_config() is None
    deadline = time.time() + 60  # the monitor writes its first status a few seconds after the instance starts
    while not ray_internals.autoscaler_status_published() and time.time() < deadline:
        time.sleep(0.5)
    assert ray_internals.autoscaler_status_published()
    assert autoscaler_node_types() == []


def test_the_autoscaler_monitor_is_found_by_its_script():
    import ray.autoscaler

    script = Path(ray.autoscaler.__file__).parent.parent / ray_internals.MONITOR_SCRIPT
    assert script.is_file(), f"Ray moved its autoscaler monitor: {script} is gone"
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(script)])
    try:
        found = None
        for _ in range(50):
            found = ray_internals.autoscaler_monitor_args()
            if found:
                break
            time.sleep(0.1)
        assert found and any(arg.endswith(ray_internals.MONITOR_SCRIPT) for arg in found)
    finally:
        stand_in.kill()
        stand_in.wait()


def test_ray_trains_report_lines_come_from_the_logger_named_by_its_path():
    from ray.train.v2._internal.execution import context as train_context

    assert train_context.logger.name == train_context.__file__
    ray_internals.quiet_train_report_lines()
    assert train_context.logger.getEffectiveLevel() == logging.WARNING


def test_ray_trains_torch_backend_has_the_steps_the_loopback_rendezvous_reuses():
    import inspect

    from ray.train.torch import TorchConfig

    backend, address_and_port, set_env_vars = ray_internals.torch_backend()
    assert TorchConfig().backend_cls is backend and callable(backend.on_start)
    assert list(inspect.signature(address_and_port).parameters) == []  # run on rank 0: (its node address, a port)
    assert list(inspect.signature(set_env_vars).parameters) == []


WORKER_PRINTS = """
import time
import ray
from rcmae.distributed.runtime import ensure_ray
ensure_ray(num_cpus=1)
ray.get(ray.remote(lambda: print("printed by a worker", flush=True)).remote())
time.sleep(3)  # the log monitor's next round
print("result")
"""


@pytest.mark.ray
def test_what_rays_workers_print_reaches_the_drivers_stderr_and_stdout_carries_results_only():
    done = subprocess.run([sys.executable, "-c", WORKER_PRINTS], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "result\n"
    assert "printed by a worker" in done.stderr


JOINS = """
import ray
from rcmae.distributed.runtime import ensure_ray
ensure_ray()
print(ray.get_runtime_context().gcs_address, ray.get(ray.remote(lambda: 1).remote()))
"""


@pytest.mark.ray
def test_a_driver_joins_a_loopback_only_instance_that_ray_address_names(ray_session):
    """A driver joining rcmae's own instance in Ray's cluster mode takes the machine's address for its own, finds no
    raylet there, and waits forever: it is asked for its nodes first and joined in their mode."""
    gcs = ray_session.get_runtime_context().gcs_address
    assert ray_internals.node_addresses(gcs) == ["127.0.0.1"]
    joined = subprocess.run([sys.executable, "-c", JOINS], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, RAY_ADDRESS=gcs))
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert joined.stdout.split() == [gcs, "1"]
