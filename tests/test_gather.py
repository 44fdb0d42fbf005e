"""Global-batch losses under DDP: 2 gloo workers, each holding part of a batch, get the loss values and
(after DDP's gradient average) the parameter gradients of one process holding the whole batch."""

import os
import socket
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rcmae import losses

ROWS_PER_RANK = (5, 3)  # unequal on purpose: the gather pads and trims


class Head(torch.nn.Module):
    """A projection followed by the batch-level losses, as RCMAE computes them in its forward."""

    def __init__(self):
        super().__init__()
        self.projection = torch.nn.Linear(8, 6)

    def forward(self, a, b, labels):
        z_a = losses.gather_batch(self.projection(a))
        z_b = losses.gather_batch(self.projection(b))
        return dict(info_nce=losses.info_nce(z_a, z_b, 0.1), vcr=losses.vcr_loss(z_a),
                    supcon=losses.supcon_loss(z_b, losses.gather_batch(labels), 0.1))


def batch():
    rng = np.random.default_rng(0)
    rows = sum(ROWS_PER_RANK)
    return (torch.tensor(rng.normal(size=(rows, 8)), dtype=torch.float32),
            torch.tensor(rng.normal(size=(rows, 8)), dtype=torch.float32),
            torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))


def run(head, a, b, labels):
    terms = head(a, b, labels)
    (terms["info_nce"] + 2.0 * terms["vcr"] + 3.0 * terms["supcon"]).backward()
    grads = {n: p.grad.numpy().copy() for n, p in head.named_parameters()}
    return {k: float(v.detach()) for k, v in terms.items()}, grads


def worker(rank, port, folder):
    warnings.simplefilter("error", FutureWarning)  # no deprecated collective on the way
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    head = torch.nn.parallel.DistributedDataParallel(Head())
    start = sum(ROWS_PER_RANK[:rank])
    part = slice(start, start + ROWS_PER_RANK[rank])
    a, b, labels = batch()
    values, grads = run(head, a[part], b[part], labels[part])
    np.savez(os.path.join(folder, f"rank{rank}.npz"), **values, **{f"grad/{k.removeprefix('module.')}": v
                                                                   for k, v in grads.items()})
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_workers_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    values, grads = run(Head(), *batch())
    for rank in (0, 1):
        found = np.load(tmp_path / f"rank{rank}.npz")
        for name, value in values.items():
            np.testing.assert_allclose(found[name], value, rtol=1e-5, err_msg=f"rank {rank} {name}")
        for name, grad in grads.items():
            np.testing.assert_allclose(found[f"grad/{name}"], grad, rtol=1e-4, atol=1e-6,
                                       err_msg=f"rank {rank} grad {name}")


def test_gather_is_the_identity_outside_ddp():
    x = torch.randn(4, 3, requires_grad=True)
    assert losses.gather_batch(x) is x
