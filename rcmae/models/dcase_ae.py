"""The DCASE 2020 Task 2 baseline: a dense autoencoder on 5 stacked log-mel frames (640 inputs),
four 128-unit layers, an 8-unit bottleneck, four 128-unit layers; the score is the reconstruction MSE."""

from __future__ import annotations

import torch
import torch.nn as nn


def dense(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU())


class DenseAE(nn.Module):
    def __init__(self, *, n_mels: int = 128, frames: int = 5, hidden: int = 128, bottleneck: int = 8):
        super().__init__()
        assert frames >= 1 and hidden > bottleneck > 0
        self.frames = frames
        width = n_mels * frames
        self.encoder = nn.Sequential(dense(width, hidden), dense(hidden, hidden), dense(hidden, hidden),
                                     dense(hidden, hidden), dense(hidden, bottleneck))
        self.decoder = nn.Sequential(dense(bottleneck, hidden), dense(hidden, hidden), dense(hidden, hidden),
                                     dense(hidden, hidden), nn.Linear(hidden, width))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(vectors))

    def stack_frames(self, specs: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, T - frames + 1, n_mels * frames): each vector is `frames` consecutive frames."""
        windows = specs.unfold(dimension=2, size=self.frames, step=1)  # (B, F, T', frames)
        return windows.permute(0, 2, 3, 1).reshape(specs.shape[0], windows.shape[2], -1)

    def loss(self, vectors: torch.Tensor) -> torch.Tensor:
        return ((self(vectors) - vectors) ** 2).mean()

    @torch.no_grad()
    def clip_scores(self, specs: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction error over all vectors of each clip."""
        self.eval()
        vectors = self.stack_frames(specs)
        flat = vectors.reshape(-1, vectors.shape[-1])
        errors = ((self(flat) - flat) ** 2).mean(dim=1)
        return errors.reshape(vectors.shape[0], -1).mean(dim=1)
