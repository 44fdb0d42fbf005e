"""The Ray internals rcmae relies on, one function each, for want of a public API in Ray 2.60. Each says why
it is needed; tests/test_ray_internals.py checks each against the installed Ray, so an upgrade that moves one
fails there, by name, instead of somewhere in a run."""

from __future__ import annotations

import logging
from pathlib import Path

AUTOSCALER_STATUS_KEY = "__autoscaling_status"  # the key an autoscaler's monitor writes its status under
MONITOR_SCRIPT = "autoscaler/_private/monitor.py"  # how the autoscaler v1 monitor process shows in its command line


def disable_cluster_mode() -> None:
    """Ray's "no cluster" mode, the only one whose servers all bind the loopback address (see
    `runtime.loopback_only`). Its flag is read into `ray_constants` when Ray is imported, so a Ray imported before
    the environment variable was set needs the constant set too."""
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def node_addresses(gcs_address: str, timeout_s: float = 10) -> list[str]:
    """The addresses of the live nodes of the cluster whose GCS is at `gcs_address`, asked before joining it: a
    driver must join a loopback-only instance in the same mode (see `runtime.loopback_only`), or it takes the
    machine's address as its own, finds no raylet there, and waits forever. `ray.nodes()` needs a joined driver."""
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    nodes = GcsClient(address=gcs_address).get_all_node_info(timeout=timeout_s)
    return [node.node_manager_address for node in nodes.values() if node.state == GcsNodeInfo.ALIVE]


def gcs_cluster_config():
    """The autoscaler's node groups as autoscaler v2 and KubeRay publish them in the GCS, None when nothing was
    published. `ray.autoscaler.sdk` can request resources but not read what node types exist."""
    import ray._private.state

    return ray._private.state.state.get_cluster_config()


def autoscaler_status_published() -> bool:
    """Whether an autoscaler (v1) monitor runs for this cluster: it writes its status under this key; Ray has no
    public call that says whether a cluster autoscales."""
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get(AUTOSCALER_STATUS_KEY) is not None


def autoscaler_monitor_args() -> list[str] | None:
    """The command line of the autoscaler v1 monitor on this machine (it names the cluster YAML that lists the
    node types), None when it runs elsewhere. Ray does not publish v1's config anywhere a driver can read."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg.endswith(MONITOR_SCRIPT) for arg in args):
            return args
    return None


def quiet_train_report_lines() -> None:
    """Ray Train's line per `ray.train.report` only at debug: it is logged by a logger named after its module's file
    path (Ray 2.60's `ray/train/v2/_internal/execution/context.py`), which no public setting reaches."""
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def torch_backend():
    """Ray Train's torch backend class, with the steps of its `on_start` rcmae's loopback rendezvous reuses
    (`rcmae.distributed.rendezvous`): `TorchConfig` offers no way to choose where its store listens."""
    from ray.train._internal.utils import get_address_and_port
    from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

    return _TorchBackend, get_address_and_port, _set_torch_distributed_env_vars


def serve_replica_grpc_on(host: str) -> None:
    """Serve replicas (in this process) open their inter-deployment gRPC server on `host` rather than on every
    interface: Ray 2.60's replica binds it to "[::]:0" when it has started, with no setting to choose (it calls
    this module-level function after the deployment's constructor, which is where rcmae calls this)."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "host", None) == host:
        return

    def bind_on_host(server, address: str) -> int:
        return bind(server, address.replace("[::]:", f"{host}:", 1))

    bind_on_host.host = host
    replica.add_port_to_grpc_server = bind_on_host


def worker_output_to_stderr() -> None:
    """What Ray's workers and raylet print reaches this driver's stderr, their stdout lines included: Ray sends
    those to the driver's stdout, which carries rcmae's results (`rcmae run > out.txt`). The stream a line came
    from is a field of the message its log monitor publishes, read by a handler no public setting replaces."""
    import functools

    from ray._private import worker

    dispatcher = worker.global_worker_stdstream_dispatcher
    if not any(name == "ray_print_logs" for name, _ in dispatcher.handlers):  # log_to_driver=False: nothing to do
        return
    ignore_prefix = worker._should_ignore_worker_log_prefix(worker.global_worker)

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        worker.print_to_stdstream({**data, "is_err": True}, ignore_prefix=ignore_prefix)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", functools.partial(to_stderr, ignore_prefix=ignore_prefix))
