"""`rcmae export`: a fine-tuned model as the files `rcmae.edge` scores with on a gateway beside the machine (numpy,
onnxruntime and soundfile; no torch, no Ray).

The folder holds `encoder.onnx` (normalised log-mels -> the pooled encoder features the `mahalanobis` score reads),
`edge.npz` (the log-mel's window and mel filters, the normaliser, and per machine the Gaussians of the pooled
features, of the log-mel statistics and of the rhythm) and `edge.json` (the audio and log-mel settings, the score
method with its members, and per machine the calibration the fusion standardises by and the decision thresholds).
The edge scores the methods made of those three parts: `mahalanobis`, `stats`, `rhythm`, `combined` and `fused`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from rcmae.data.run_folder import written_aside
from rcmae.detect.detector_files import load_detector
from rcmae.detect.fusions import FUSIONS, edge_methods, members_of
from rcmae.detect.ppca import GAUSSIAN_PARTS
from rcmae.edge import ARRAYS, EDGE_FORMAT, ENCODER, SETTINGS
from rcmae.errors import RcmaeError
from rcmae.features import LogMel
from rcmae.models.checkpoint import load_checkpoint
from rcmae.models.mae import RCMAE
from rcmae.registry import SCORES


class PooledEncoder(torch.nn.Module):
    """The encoder of whole clips as one graph: normalised log-mels (B, F, T) -> pooled features. Every patch is
    visible, so the tokens stay in grid order: `RCMAE.embed`'s shuffle and its inverse (which attention does not
    see) are left out, and pooling is a plain mean."""

    def __init__(self, model: RCMAE):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        model = self.model
        tokens = model.patch_embed(model.patchify(logmel)) + model.pos_embed
        latent = model.encoder(torch.cat([model.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1))[:, 1:]
        if model.model_config.pooling == "mean":
            return latent.mean(dim=1)
        rows, cols = model.feature_config.grid
        return latent.reshape(latent.shape[0], rows, cols, -1).mean(dim=2).reshape(latent.shape[0], -1)


def edge_members(method: str) -> tuple[str, ...]:
    """The parts `method` is made of; an error when the edge cannot compute one of them."""
    members = members_of(method)
    if method not in edge_methods():
        missing = ", ".join(m for m in members if not SCORES[m].on_edge)
        raise RcmaeError(f"score method {method!r} needs {missing}, which the edge runtime does not compute: "
                         f"export with --method one of {', '.join(edge_methods())}")
    return members


def export_edge(model_dir: str | Path, out_dir: str | Path, method: str | None = None) -> Path:
    """Writes the edge folder of the fine-tuned model in `model_dir` (whole or not at all); returns it."""
    checkpoint = load_checkpoint(model_dir)
    detector = load_detector(model_dir)
    meta = checkpoint.meta
    method = method or meta.score.method
    members = edge_members(method)
    features, audio = checkpoint.features, checkpoint.audio
    machines = sorted(detector.gaussians)
    mel = LogMel(features, audio.sample_rate).mel
    arrays = {"window": mel.spectrogram.window.numpy(), "mel_filters": mel.mel_scale.fb.numpy(),
              "norm_mean": checkpoint.normalizer.mean, "norm_std": checkpoint.normalizer.std}
    for index, key in enumerate(machines):
        arrays.update({f"ppca_{part}_{index}": detector.gaussians[key][part] for part in GAUSSIAN_PARTS})
        for name in ("stats", "rhythm"):
            gaussian = detector.profiles[name][key]
            arrays.update({f"{name}_mean_{index}": gaussian.mean.astype(np.float32),  # as detector.safetensors
                           f"{name}_inverse_{index}": gaussian.inverse.astype(np.float32)})
    settings = dict(format=EDGE_FORMAT, method=method, members=list(members),
                    rule=FUSIONS[method].rule if method in FUSIONS else None, machines=machines,
                    sample_rate=audio.sample_rate, clip_seconds=audio.clip_seconds, pad_mode=audio.pad_mode,
                    min_seconds=audio.min_seconds, n_fft=features.n_fft, hop_length=features.hop_length,
                    n_frames=features.n_frames, thresholds={key: detector.thresholds[method][key] for key in machines},
                    calibration={member: {key: list(detector.calibration[member][key]) for key in machines}
                                 for member in members})
    with written_aside(out_dir) as staging:
        example = torch.zeros(1, features.n_mels, features.n_frames)
        # the TorchScript exporter on purpose (torch.export's fixes this graph's batch size), without its notes on
        # shape checks that hold for every export and on its own deprecation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(PooledEncoder(checkpoint.model).eval(), (example,), str(staging / ENCODER),
                              input_names=["logmel"], output_names=["pooled"], opset_version=17, dynamo=False,
                              dynamic_axes={"logmel": {0: "clips"}, "pooled": {0: "clips"}})
        np.savez(staging / ARRAYS, **{name: np.asarray(value) for name, value in arrays.items()})
        (staging / SETTINGS).write_text(json.dumps(settings, indent=1))
    return Path(out_dir)
