"""Ray Train's torch process group with its rendezvous store on the loopback address, for a local instance.

Ray Train's `TorchConfig` has rank 0 start torch's TCPStore, whose server listens on every interface of the machine
and answers any client without a credential. On a local rcmae instance (its node address 127.0.0.1,
`rcmae.distributed.runtime.loopback_only`) rank 0 here binds the store's socket to 127.0.0.1 itself and hands it
to the store (torch's `master_listen_fd`); gloo's own sockets then bind the address the store is reached at. On a
cluster the store must be reachable from the other nodes: Ray's own setup runs unchanged there.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

from ray.train.torch import TorchConfig

from rcmae.distributed.ray_internals import torch_backend
from rcmae.distributed.runtime import LOOPBACK

_TorchBackend, address_and_port, set_distributed_env_vars = torch_backend()
_listener: socket.socket | None = None  # rank 0's bound socket, kept open as long as its store serves


def bind_loopback() -> int:
    """On rank 0: a listening socket on 127.0.0.1 for the store; its port."""
    global _listener
    _listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _listener.bind((LOOPBACK, 0))
    _listener.listen(128)
    return _listener.getsockname()[1]


def join_group(backend: str, rank: int, world_size: int, port: int, timeout_s: int) -> None:
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(LOOPBACK, port, world_size, rank == 0, timeout,
                          master_listen_fd=_listener.fileno() if rank == 0 else None)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


class LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        import ray

        address, _ = worker_group.execute_single(0, address_and_port)
        if address != LOOPBACK or backend_config.backend is None:
            return super().on_start(worker_group, backend_config)
        port = worker_group.execute_single(0, bind_loopback)
        worker_group.execute(set_distributed_env_vars)
        ray.get([worker_group.execute_single_async(rank, join_group, backend_config.backend, rank, len(worker_group),
                                                   port, backend_config.timeout_s)
                 for rank in range(len(worker_group))])


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """`TorchConfig` whose process group, on a local instance, rendezvouses on 127.0.0.1 only."""

    @property
    def backend_cls(self):
        return LoopbackTorchBackend
