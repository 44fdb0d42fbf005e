"""RC-MAE's losses, one function per equation of the paper (plain PyTorch, no Ray), and the gather that
makes the batch-level ones (Eqs. 3-7, 9) see the global batch under DDP."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherRows(torch.autograd.Function):
    """Every worker's (equally sized) `x`, stacked in rank order; backward hands each worker the sum over workers of
    the gradients for its own rows (what torch's deprecated `torch.distributed.nn.functional.all_gather` did)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Every DDP worker's rows of `x`, in rank order, with gradients flowing back to each worker's own rows
    (the identity outside DDP). InfoNCE negatives, the variance/covariance statistics and SupCon positives
    then come from the global batch, as on one device: with W workers each worker's loss equals the
    1-process loss, its backward gives W times its rows' share of the gradient, and DDP's 1/W average of
    the parameter gradients gives exactly the 1-process gradient. Workers may hold different row counts."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(s.item()) for s in sizes]
    padded = F.pad(x, (0, 0) * (x.dim() - 1) + (0, max(sizes) - x.shape[0]))
    if x.requires_grad:
        parts = _GatherRows.apply(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: squared error averaged within each patch, then over masked patches only.

    pred, target: (B, N, patch_dim); mask: (B, N) with 1 where the patch was hidden from the encoder.
    """
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def info_nce_paper(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 3 as written: each original embedding z_a[i] is the anchor, its augmented view z_b[i] the
    positive and the other augmented views z_b[k], k != i, the negatives, on cosine similarity / tau:
    -1/N sum_i log(exp(s_ii / tau) / (sum_{k != i} exp(s_ik / tau) + exp(s_ii / tau)))."""
    logits = F.normalize(z_a, dim=1) @ F.normalize(z_b, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(z_a.shape[0], device=z_a.device))


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 3 made symmetric, with in-batch negatives from both views (NT-Xent): each of the 2N embeddings has its
    pair as
    the positive and the other 2N - 2 as negatives, on cosine similarity / tau; averaged over all 2N anchors."""
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.T / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def variance_loss(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 4: hinge keeping each dimension's batch standard deviation at least gamma (std = sqrt(var + eps))."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_matrix(z: torch.Tensor) -> torch.Tensor:
    """Eq. 5: sample covariance (1 / (n - 1)) of the batch's embeddings, (d, d)."""
    centred = z - z.mean(dim=0)
    return centred.T @ centred / (z.shape[0] - 1)


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Eq. 6: squared off-diagonal covariances, summed and divided by the dimension d."""
    cov = covariance_matrix(z)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return (off_diagonal ** 2).sum() / z.shape[1]


def vcr_loss(z: torch.Tensor) -> torch.Tensor:
    """Eq. 7: (v(Z) + c(Z)) / 2, for one branch."""
    return 0.5 * (variance_loss(z) + covariance_loss(z))


def rcmae_loss(contrastive: torch.Tensor, vcr: torch.Tensor, mae: torch.Tensor,
               lambda_con: float, lambda_vcr: float, lambda_mae: float) -> torch.Tensor:
    """Eq. 8: the weighted stage-1 total."""
    return lambda_con * contrastive + lambda_vcr * vcr + lambda_mae * mae


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 9: supervised contrastive loss on L2-normalised embeddings. For each anchor i, the mean over
    positives p (same label, p != i) of -log(exp(z_i.z_p / tau) / sum_{j != i} exp(z_i.z_j / tau)).
    Anchors without a positive in the batch are left out of the mean."""
    z = F.normalize(z, dim=1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    has_positive = counts > 0
    if not has_positive.any():
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(dim=1)) / counts.clamp(min=1)
    return per_anchor[has_positive].mean()


def stage2_loss(scl: torch.Tensor, ce: torch.Tensor, lambda_scl: float, lambda_ce: float) -> torch.Tensor:
    """Eq. 10: the weighted stage-2 total."""
    return lambda_scl * scl + lambda_ce * ce
