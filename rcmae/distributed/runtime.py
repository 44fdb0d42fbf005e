"""Joining Ray and planning what to ask it for.

`ensure_ray` joins the cluster named by RAY_ADDRESS (as `ray job submit` sets it), else starts a local instance of its
own, even when another Ray cluster runs on the machine. The plans turn config into Ray resource requests: `auto`
settings (None) size from the cluster as it is now, which is right on one node; explicit settings (and the `paper`
preset's GPUs) are requested as given, so an autoscaling cluster adds the nodes that serve them. `require_feasible`
stops a request that no node, present or startable, could ever hold, instead of letting it wait forever.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import yaml

from rcmae.distributed.ray_internals import (
    autoscaler_monitor_args,
    autoscaler_status_published,
    disable_cluster_mode,
    gcs_cluster_config,
    node_addresses,
    worker_output_to_stderr,
)
from rcmae.errors import RcmaeError
from rcmae.registry import AUGMENTERS
from rcmae.sections import AugmentConfig, ScaleConfig

log = logging.getLogger(__name__)



class ResourceError(RcmaeError):
    """A resource request that no node of the cluster, or of its autoscaler's node types, can hold."""


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


LOOPBACK = "127.0.0.1"


STATE_API_ENV = "RAY_API_SERVER_ADDRESS"  # where Ray's state API calls go when they name no address


DASHBOARD_PORT = 8265  # Ray's own default


def dashboard_port() -> int:
    """Ray's usual dashboard port when it is free, else one the system gives (a port picked at random could be
    one the caller has just checked and is about to listen on: `rcmae serve --port`)."""
    for port in (DASHBOARD_PORT, 0):
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RcmaeError("no free port on 127.0.0.1 for Ray's dashboard")


def on_loopback_node() -> bool:
    """Whether this Ray process runs on a local instance `loopback_only` started (its node address is loopback):
    then whatever it opens itself belongs on loopback too."""
    import ray.util

    return ray.util.get_node_ip_address() == LOOPBACK


@contextmanager
def loopback_only() -> Iterator[None]:
    """Keep a local Ray instance on 127.0.0.1. Ray 2.60's `ray.init` turns `_node_ip_address="127.0.0.1"` into
    the machine's address, and its servers bind the node address (GCS, raylet and worker gRPC on every
    interface); only its "no cluster" mode (what it uses on macOS and Windows, set by this variable, read by the
    driver and inherited by every Ray process it starts) takes loopback as the node address, and then GCS,
    raylet, workers, the dashboard, its agent, the runtime-env agent and the metrics exporters all listen on
    127.0.0.1 (measured with `ss -ltnp`; `tests/test_fault_matrix.py` checks it). Token auth stays on. The
    variable is set while the instance starts (its processes keep it), not for later subprocesses (`ray start`)."""
    disable_cluster_mode()
    before = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[LOOPBACK_ENV]
        else:
            os.environ[LOOPBACK_ENV] = before


def is_loopback_instance(address: str) -> bool:
    """Whether RAY_ADDRESS names a GCS on this machine's loopback whose nodes all live on 127.0.0.1 (an instance
    started by `loopback_only`, such as another rcmae command's): such an instance is joined in its own mode."""
    host, _, port = address.rpartition(":")
    if host not in (LOOPBACK, "localhost") or not port.isdigit():
        return False
    try:
        nodes = node_addresses(address)
    except Exception as error:  # noqa: BLE001 - ray.init says best why a cluster cannot be joined
        log.debug(f"ray: could not list the nodes at {address}: {error}")
        return False
    return bool(nodes) and all(node == LOOPBACK for node in nodes)


DASHBOARD_TRIES = 3  # a port free when checked can be taken before Ray's dashboard binds it (another instance starting)
# what Ray says then: before it starts the dashboard (a ValueError), or when the dashboard fails to bind (Exception)
PORT_TAKEN = ("because it's already occupied", "Failed to find a valid port for dashboard")


def start_local(num_cpus: int | None):
    """A local loopback-only instance with its dashboard on a free port; when another process takes that port
    between the check and the dashboard's bind, the instance is stopped and started again on another."""
    import ray

    def start():
        port = dashboard_port()
        with loopback_only():
            return ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host=LOOPBACK,
                            dashboard_port=port, configure_logging=True, logging_level="warning",
                            runtime_env={"env_vars": {STATE_API_ENV: f"http://{LOOPBACK}:{port}"}})

    for _ in range(DASHBOARD_TRIES - 1):
        try:
            return start()
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception for it
            if not any(words in str(error) for words in PORT_TAKEN):
                raise
            ray.shutdown()
            log.warning("ray: the dashboard's port was taken before it could listen on it; starting again")
    return start()


def ensure_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address and is_loopback_instance(address):
        with loopback_only():
            ray.init(address=address)
        log.info(f"ray: joined the loopback-only instance at {address} (RAY_ADDRESS)")
    elif address:
        ray.init(address=address)
        log.info(f"ray: joined the cluster at {address} (RAY_ADDRESS)")
    else:
        # address "local": a new instance of its own, never a `ray start` cluster already on this machine (which a
        # bare `ray.init()` would join through Ray's current-cluster file); with the dashboard: it serves Ray's
        # state API, which Ray Train polls (and complains about without)
        # Ray's state API, asked without an address (as Ray Train's placement-group cleaner asks whether its
        # controller lives), finds "the" instance on the machine from Ray's files: beside another instance it asked
        # that one, found no controller and removed the training's placement group. Its workers are told which.
        context = start_local(num_cpus)
        log.info(f"ray: a local instance of its own (RAY_ADDRESS names no cluster to join); dashboard at "
                 f"http://{context.dashboard_url}")
    worker_output_to_stderr()  # stdout carries results only
    import ray.data

    # bars on a terminal; in a log (a file, `ray job logs`, CI) they are fragments and escape codes
    wanted = os.environ.get("RCMAE_PROGRESS", "1" if sys.stderr.isatty() else "0")
    ray.data.DataContext.get_current().enable_progress_bars = wanted == "1"


@dataclass(frozen=True)
class ResourcePlan:
    """Model workers (Ray Train's, or batch inference's actors) and what each reserves."""

    num_workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]

    @property
    def backend(self) -> str:
        return "nccl" if self.use_gpu else "gloo"

    def with_workers(self, num_workers: int) -> "ResourcePlan":
        return replace(self, num_workers=num_workers)


@dataclass(frozen=True)
class PoolPlan:
    """An actor pool that grows from `min_size` (what the cluster holds now) to `max_size` (what was asked for,
    or what an autoscaling cluster can reach) as nodes arrive, and what each actor reserves."""

    min_size: int
    max_size: int
    num_gpus: float
    num_cpus: float

    @property
    def sizes(self) -> str:
        return str(self.max_size) if self.min_size == self.max_size else f"{self.min_size} to {self.max_size}"

    def strategy(self):
        import ray.data

        return ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size)


@contextmanager
def nodes_for(plan: PoolPlan) -> Iterator[None]:
    """While the block runs, ask the cluster's autoscaler (if any) for the nodes an elastic pool's largest size
    needs: Ray Data grows a pool only into resources the cluster has, so without this request it would stay at the
    size it started with. The request is withdrawn when the block ends (each request replaces the last)."""
    if plan.max_size == plan.min_size:
        yield
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": plan.num_cpus, "GPU": plan.num_gpus}] * plan.max_size)
    try:
        yield
    finally:
        request_resources(bundles=[])


def fitting_now(wanted: int, per_actor: dict, resources: dict) -> int:
    """How many of `wanted` actors the cluster's resources hold now (at least 1: the pool waits for it)."""
    room = min((float(resources.get(name, 0)) / amount for name, amount in per_actor.items() if amount),
               default=float(wanted))
    return max(1, min(wanted, int(room + 1e-9)))


def scaling_plan(scale: ScaleConfig, resources: dict) -> ResourcePlan:
    """Ray Train workers and what each reserves. `resources` (the cluster now) only fills in `auto` fields:
    one GPU worker per GPU present, else up to 2 CPU workers holding a fractional CPU each so Ray Data's
    readers still find a core on small machines."""
    gpus_now = int(resources.get("GPU", 0))
    use_gpu = bool(gpus_now) if scale.use_gpu is None else scale.use_gpu
    if scale.num_workers is not None:
        workers = scale.num_workers
    elif use_gpu:
        workers = max(1, gpus_now)
    else:
        workers = max(1, min(2, int(float(resources.get("CPU", 1)))))
    per_worker = {"CPU": scale.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    return ResourcePlan(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker)


def pool_plan(augment: AugmentConfig, resources: dict, reachable_gpus: float | None = None) -> PoolPlan:
    """Augmentation actor pool: sizes and per-actor resources. GPU actors when `augment.use_gpu` says so, or
    (auto) when the cluster has GPUs now and the augmenter's registry entry `needs_gpu` (never for one applied per
    training step: its pipeline computes log-mels only): the pool starts with the actors the GPUs present hold
    and grows to `augment.num_actors`, or (auto) to what `reachable_gpus` (the GPUs an autoscaling cluster can
    reach) holds. Otherwise one CPU actor per core, each reserving half a core so Ray Data's Parquet writers
    (and a previous pool still shutting down) always find room; the reservation is a scheduling hint, not a cap."""
    gpus_now = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    wants_gpu = AUGMENTERS[augment.augmenter].needs_gpu
    use_gpu = (bool(gpus_now) and wants_gpu) if augment.use_gpu is None else augment.use_gpu
    use_gpu = use_gpu and not augment.per_step  # log-mels only: a GPU would sit idle
    if use_gpu:
        ceiling = max(gpus_now, reachable_gpus or 0)
        most = augment.num_actors or max(1, int(ceiling / augment.gpus_per_actor + 1e-9))
        return PoolPlan(min_size=fitting_now(most, {"GPU": augment.gpus_per_actor}, resources), max_size=most,
                        num_gpus=augment.gpus_per_actor, num_cpus=1)
    size = augment.num_actors or max(1, min(8, int(cpus)))
    return PoolPlan(min_size=size, max_size=size, num_gpus=0, num_cpus=max(0.1, 0.5 * cpus / size))


def inference_pool(plan: ResourcePlan, resources: dict) -> PoolPlan:
    """Batch inference's model actors: from those the cluster holds now up to the plan's workers."""
    actor = plan.resources_per_worker
    most = max(1, plan.num_workers)
    return PoolPlan(min_size=fitting_now(most, actor, resources), max_size=most, num_gpus=actor.get("GPU", 0),
                    num_cpus=actor["CPU"])


def autoscaler_node_groups() -> list[tuple[dict, int]] | None:
    """(resources, most nodes: -1 when unbounded) of each node type the cluster's autoscaler may start; [] without
    an autoscaler; None when there is one but its node types cannot be read from here (the driver is not on the
    head node)."""
    config = gcs_cluster_config()
    if config is not None:
        return [(dict(group.resources), int(group.max_count)) for group in config.node_group_configs
                if group.max_count != 0]
    if not autoscaler_status_published():
        return []
    monitor_args = autoscaler_monitor_args()  # autoscaler v1: the head's monitor process names its config file
    if monitor_args is None:
        return None
    path = next((arg.split("=", 1)[1] for arg in monitor_args if arg.startswith("--autoscaling-config=")), None)
    if path is None:  # a monitor without a config: `ray start` without autoscaling, no node can be added
        return []
    config = yaml.safe_load(Path(path).expanduser().read_text())
    most = int(config.get("max_workers", -1))
    return [(dict(node_type.get("resources", {})), int(node_type.get("max_workers", most)))
            for node_type in config.get("available_node_types", {}).values() if node_type.get("max_workers", 1) != 0]


def autoscaler_node_types() -> list[dict] | None:
    """Resources of the node types the cluster's autoscaler may start (see `autoscaler_node_groups`)."""
    groups = autoscaler_node_groups()
    return None if groups is None else [resources for resources, _ in groups]


def reachable_gpus(resources: dict) -> float:
    """The GPUs this cluster can reach: those present, or every GPU node type at its most nodes when that is
    more (an unbounded node type counts once: the pool's maximum is then the user's to set)."""
    groups = autoscaler_node_groups() or []
    startable = sum(group.get("GPU", 0) * (most if most > 0 else 1) for group, most in groups)
    return max(float(resources.get("GPU", 0)), float(startable))


def node_capacities() -> list[dict] | None:
    """Resources of every live node and of every node type the autoscaler may start (None: unknown)."""
    import ray

    node_types = autoscaler_node_types()
    if node_types is None:
        return None
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]] + node_types


def fits(bundle: dict, capacity: dict) -> bool:
    return all(capacity.get(name, 0) >= amount for name, amount in bundle.items() if amount)


def require_feasible(what: str, bundle: dict, capacities: list[dict] | None = None) -> None:
    """Raise `ResourceError` unless some node or startable node type can hold `bundle`."""
    capacities = node_capacities() if capacities is None else capacities
    if capacities is None:
        log.warning("%s asks for %s per worker; this cluster's autoscaler node types are not visible from this "
                    "driver, so whether any node can ever hold it is not checked", what, bundle)
        return
    if not any(fits(bundle, capacity) for capacity in capacities):
        offered = sorted({tuple(sorted((k, v) for k, v in c.items() if k in ("CPU", "GPU"))) for c in capacities})
        raise ResourceError(
            f"{what} asks for {bundle} per worker, but no node of this cluster and no node type its autoscaler can "
            f"start offers that (nodes and node types offer {[dict(o) for o in offered]}). Add a node type that "
            f"does to the cluster config, or ask for less (e.g. --set scale.use_gpu=false, "
            f"--set augment.use_gpu=false, --set augment.gpus_per_actor=1).")


def held_by(bundle: dict, capacity: dict) -> int:
    """How many copies of `bundle` one node of `capacity` holds at once."""
    wanted = {name: amount for name, amount in bundle.items() if amount}
    return int(min((capacity.get(name, 0) // amount for name, amount in wanted.items()), default=0))


def require_group_feasible(what: str, bundle: dict, workers: int, node_types: list[dict] | None = None,
                           nodes: list[dict] | None = None) -> None:
    """`require_feasible` for each worker's bundle, then, on a cluster whose autoscaler can start no node (a local
    instance, a fixed cluster), that its live nodes hold all `workers` bundles at once: Ray Train would otherwise
    wait for the group forever."""
    import ray

    node_types = autoscaler_node_types() if node_types is None else node_types
    nodes = [dict(n["Resources"]) for n in ray.nodes() if n["Alive"]] if nodes is None else nodes
    require_feasible(what, bundle, None if node_types is None else nodes + node_types)
    if node_types != []:  # an autoscaler may add nodes (or what it may add is not visible)
        return
    held = sum(held_by(bundle, node) for node in nodes)
    if held < workers:
        raise ResourceError(f"{what} asks for {workers} workers of {bundle} each, but this cluster's nodes hold "
                            f"{held} at once and no autoscaler can add nodes: --set scale.num_workers="
                            f"{max(held, 1)} or less (or leave it unset to size from the cluster)")
