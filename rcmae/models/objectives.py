"""The two training objectives, each a small module around the model that DDP wraps.

Stage 1 (`PretrainObjective`, Eq. 8): both views (original, augmented) are masked with one drawn share,
their visible patches encoded, pooled and projected (InfoNCE between the views, VCR per view); the original
view is decoded and its hidden patches reconstructed (MAE). Stage 2 (`FinetuneObjective`, Eq. 10): whole
clips, supervised contrastive on the embeddings plus cross-entropy of the machine-ID head. The batch-level
terms see the global batch under DDP (`losses.gather_batch`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rcmae import losses
from rcmae.models.mae import RCMAE
from rcmae.sections import FinetuneConfig, PretrainConfig


def full_precision(*tensors: torch.Tensor):
    """The tensors in fp32, for losses computed outside autocast: InfoNCE's logits at tau 0.05 and the
    covariance products lose too much in bf16 (cosines round to ~4e-3, ~0.08 per logit). The encoder may stay
    in bf16."""
    return tuple(t.float() for t in tensors)


def losses_in_fp32(device: torch.device):
    return torch.autocast(device.type, enabled=False)


def spread(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of the normalised embeddings: a collapse monitor (0 = collapsed)."""
    return F.normalize(z, dim=1).std(dim=0).mean().detach()


class PretrainObjective(nn.Module):
    def __init__(self, model: RCMAE, cfg: PretrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def draw_mask_ratio(self) -> float:
        """The configured share, or one drawn per batch from [mask_ratio, mask_ratio_max]."""
        low, high = self.model.model_config.mask_ratio, self.model.model_config.mask_ratio_max
        return low if high is None else low + (high - low) * float(torch.rand(()))

    def reconstruction_target(self, specs: torch.Tensor) -> torch.Tensor:
        target = self.model.patchify(specs)
        if self.model.model_config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def contrastive(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        info_nce = losses.info_nce_paper if self.cfg.contrastive == "paper" else losses.info_nce
        return info_nce(z_a, z_b, self.cfg.tau)

    def forward(self, original: torch.Tensor, augmented: torch.Tensor,
                mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.cfg
        ratio = self.draw_mask_ratio() if mask_ratio is None else mask_ratio
        latent_a, mask_a, restore_a = model.encode(original, ratio)
        latent_b, _, restore_b = model.encode(augmented, ratio)
        z_a = model.project(model.pool(latent_a, restore_a))
        z_b = model.project(model.pool(latent_b, restore_b))
        pred = model.decode(latent_a, restore_a)
        with losses_in_fp32(original.device):
            z_a, z_b, pred, original = full_precision(z_a, z_b, pred, original)
            z_a, z_b = losses.gather_batch(z_a), losses.gather_batch(z_b)
            terms = dict(contrastive=self.contrastive(z_a, z_b),
                         vcr=0.5 * (losses.vcr_loss(z_a) + losses.vcr_loss(z_b)),
                         mae=losses.mae_loss(pred, self.reconstruction_target(original), mask_a))
            terms["loss"] = losses.rcmae_loss(terms["contrastive"], terms["vcr"], terms["mae"],
                                              cfg.lambda_con, cfg.lambda_vcr, cfg.lambda_mae)
            terms["z_std"] = spread(z_a)
        return terms


class FinetuneObjective(nn.Module):
    def __init__(self, model: RCMAE, cfg: FinetuneConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, specs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        pooled, z = self.model(specs)
        logits = self.model.classify(pooled)
        with losses_in_fp32(specs.device):
            z, logits = full_precision(z, logits)
            supcon = losses.supcon_loss(losses.gather_batch(z), losses.gather_batch(labels), cfg.tau)
            terms = dict(supcon=supcon, ce=F.cross_entropy(logits, labels))
            terms["loss"] = losses.stage2_loss(terms["supcon"], terms["ce"], cfg.lambda_scl, cfg.lambda_ce)
            terms["accuracy"] = (logits.argmax(dim=1) == labels).float().mean().detach()
            terms["z_std"] = spread(z)
        return terms
