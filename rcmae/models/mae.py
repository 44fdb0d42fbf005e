"""The RC-MAE model: a ViT masked autoencoder over log-mel patches.

The model exposes its parts: `encode` (patches -> visible tokens, optionally masked), `decode` (tokens ->
reconstructed patches), `pool` (tokens -> one vector per clip), `project` and `classify`; `forward` embeds
whole clips for inference. The two training objectives that combine them (stage 1: MAE + InfoNCE + VCR;
stage 2: supervised contrastive + cross-entropy) are the modules in `rcmae.models.objectives` that DDP wraps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from rcmae.errors import RcmaeError
from rcmae.features import patchify
from rcmae.sections import FeatureConfig, ModelConfig


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding: half the channels encode the frequency row, half the time
    column. (rows*cols, dim)."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], axis=1)
    return torch.from_numpy(table).float()


def transformer(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def mae_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class RCMAE(nn.Module):
    def __init__(self, *, model: ModelConfig, features: FeatureConfig, num_classes: int = 0):
        super().__init__()
        self.model_config, self.feature_config = model, features
        num_patches = features.num_patches
        self.patch_embed = nn.Linear(features.patch_dim, model.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, model.embed_dim))
        self.register_buffer("pos_embed", sincos_2d(model.embed_dim, features.grid)[None], persistent=False)
        self.encoder = transformer(model.embed_dim, model.depth, model.num_heads, model.mlp_ratio)
        self.encoder_norm = nn.LayerNorm(model.embed_dim)

        self.decoder_embed = nn.Linear(model.embed_dim, model.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, model.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d(model.decoder_embed_dim, features.grid)[None],
                             persistent=False)
        self.decoder = transformer(model.decoder_embed_dim, model.decoder_depth, model.decoder_num_heads,
                                   model.mlp_ratio)
        self.decoder_norm = nn.LayerNorm(model.decoder_embed_dim)
        self.decoder_pred = nn.Linear(model.decoder_embed_dim, features.patch_dim)

        rows = features.grid[0] if model.pooling == "frequency" else 1
        self.pooled_dim = model.embed_dim * rows
        self.projection = nn.Linear(self.pooled_dim, model.proj_dim)
        self.classifier = nn.Linear(self.pooled_dim, num_classes) if num_classes else None
        self.num_patches = num_patches
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Class and mask tokens ~ N(0, 0.02) either way; with `weight_init: mae`, also the reference MAE's
        Xavier-uniform linear layers with zero biases and unit LayerNorms (else PyTorch's layer defaults)."""
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.model_config.weight_init == "mae":
            self.apply(mae_init)

    def with_classifier(self, num_classes: int) -> "RCMAE":
        """Attach a fresh machine-ID head (stage 2 starts from stage 1's weights)."""
        self.classifier = nn.Linear(self.pooled_dim, num_classes).to(self.cls_token.device)
        if self.model_config.weight_init == "mae":
            mae_init(self.classifier)
        return self

    def patchify(self, specs: torch.Tensor) -> torch.Tensor:
        return patchify(specs, self.feature_config.patch_freq, self.feature_config.patch_time)

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float):
        """Keep a random (1 - mask_ratio) share of tokens per sample. Returns visible tokens, the binary
        mask (1 = hidden) in original order, and the permutation that restores that order."""
        batch, length, _ = x.shape
        return RCMAE.keep_lowest(x, torch.rand(batch, length, device=x.device), int(length * (1 - mask_ratio)))

    @staticmethod
    def keep_lowest(x: torch.Tensor, noise: torch.Tensor, keep: int):
        """`random_masking` for given `noise` (batch, length): the `keep` tokens of lowest noise stay visible."""
        batch, length, width = x.shape
        ids_shuffle = torch.argsort(noise, dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, width))
        mask = torch.ones(batch, length, device=x.device)
        mask[:, :keep] = 0
        return visible, torch.gather(mask, 1, ids_restore), ids_restore

    def encode(self, specs: torch.Tensor, mask_ratio: float = 0.0, hidden: torch.Tensor | None = None):
        """Encoder tokens (class token first) of the visible patches, the mask (1 = hidden) and the
        permutation that restores grid order. `hidden` (batch, num_patches; the same count per clip) names the
        patches to hide instead of a random `mask_ratio` share."""
        x = self.patch_embed(self.patchify(specs)) + self.pos_embed
        if hidden is None:
            x, mask, ids_restore = self.random_masking(x, mask_ratio)
        else:
            x, mask, ids_restore = self.keep_lowest(x, hidden.float(), x.shape[1] - int(hidden[0].sum()))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, x], dim=1)), mask, ids_restore

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Every patch of the grid predicted from the visible tokens: (batch, num_patches, patch_dim)."""
        x = self.decoder_embed(self.encoder_norm(latent))
        batch, length = ids_restore.shape
        fill = self.mask_token.expand(batch, length + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:], fill], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = self.decoder(torch.cat([x[:, :1], tokens + self.decoder_pos_embed], dim=1))
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def grid_tokens(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """The encoded patch tokens of an unmasked clip in grid order (row-major over frequency x time)."""
        tokens = latent[:, 1:]
        if tokens.shape[1] != ids_restore.shape[1]:
            raise ValueError("grid_tokens needs every patch encoded (mask_ratio 0)")
        return torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, tokens.shape[2]))

    def pool(self, latent: torch.Tensor, ids_restore: torch.Tensor | None = None) -> torch.Tensor:
        """One vector per clip from the encoded patch tokens (the class token is left out). 'mean' averages
        them; 'frequency' averages each frequency row of the patch grid over time, over the visible tokens
        only, and concatenates the rows. `ids_restore` (from masking) puts visible tokens back in grid order.
        Pooling reads the encoder's output before its final per-token LayerNorm (which only feeds the
        decoder): that norm would erase each token's level, and with it much of what a fault changes."""
        tokens = latent[:, 1:]
        if self.model_config.pooling == "mean":
            return tokens.mean(dim=1)
        batch, visible, width = tokens.shape
        weight = torch.ones(batch, visible, device=tokens.device, dtype=tokens.dtype)
        if ids_restore is not None:
            hidden = ids_restore.shape[1] - visible
            tokens = torch.gather(torch.cat([tokens, tokens.new_zeros(batch, hidden, width)], dim=1), 1,
                                  ids_restore[..., None].expand(-1, -1, width))
            weight = torch.gather(torch.cat([weight, weight.new_zeros(batch, hidden)], dim=1), 1, ids_restore)
        rows, cols = self.feature_config.grid
        sums = (tokens * weight[..., None]).reshape(batch, rows, cols, width).sum(dim=2)
        counts = weight.reshape(batch, rows, cols).sum(dim=2).clamp(min=1.0)
        return (sums / counts[..., None]).reshape(batch, rows * width)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projection(pooled)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Machine-ID logits."""
        if self.classifier is None:
            raise RcmaeError("this model has no machine-ID head: fine-tune it (stage 2) first")
        return self.classifier(pooled)

    def forward(self, specs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled encoder features, projected embedding) of whole (unmasked) clips."""
        pooled, z, _ = self.embed(specs)
        return pooled, z

    def embed(self, specs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled features, projected embedding, patch tokens in grid order) of whole (unmasked) clips."""
        latent, _, ids_restore = self.encode(specs)
        pooled = self.pool(latent, ids_restore)
        return pooled, self.project(pooled), self.grid_tokens(latent, ids_restore)
