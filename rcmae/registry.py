"""The pluggable kinds and their members, by name: augmenters, score methods and the reference detectors.
Config validation, the CLI's choices, the actor-pool plan and the augmenter factory all read these tables, so
a new augmenter is its module, one entry here and its test. Entries name their implementation as
"module:attribute" and load it only when used, so this table (the bottom layer) imports nothing of rcmae; the
config loads the chosen augmenter's options dataclass through it (the one reference from a low layer up)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


def load(target: str):
    """The object a "module:attribute" entry names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Augmenter:
    name: str
    target: str      # "module:Class"; the class takes (its options, sample_rate=..., device=...)
    options: str     # "module:Class" of its options: a config Section whose fields sit in `augment` beside the rest
    needs_gpu: bool  # worth a GPU actor when the cluster has GPUs and augment.use_gpu is auto
    doc: str
    # applied to every training batch on the training device (the class gives `draw(rng, shape)`), nothing written:
    # the pipeline writes log-mels only, on CPU actors
    per_step: bool = False

    def load(self) -> type:
        return load(self.target)

    def load_options(self) -> type:
        return load(self.options)


@dataclass(frozen=True)
class Score:
    name: str
    target: str  # "module:function"; (encoded, keys, classes, detector) -> one score per clip, higher = odder
    origin: str  # "the paper's score" or "rcmae extension": report.md says which
    positive: bool = True  # a positive distance, which a fusion standardises as its log (else as it is: a log)

    def load(self):
        return load(self.target)


AUGMENTERS = {entry.name: entry for entry in (
    Augmenter("factory-mix", "rcmae.augment.factory_mix:FactoryMix", "rcmae.augment.factory_mix:FactoryMixOptions",
              False,
              "weight-free: synthetic factory noise chosen by the same prompts, mixed at a random SNR"),
    Augmenter("audioldm", "rcmae.augment.audioldm:AudioLDMAugmenter", "rcmae.augment.audioldm:AudioLDMOptions",
              True,
              "AudioLDM SDEdit diffusion (the paper's; needs `model`)"),
    Augmenter("masking", "rcmae.augment.specaugment:StepMasking", "rcmae.augment.specaugment:MaskOptions", False,
              "fresh random time and frequency masks on every training batch (the paper's Table 3 Baseline)",
              per_step=True),
    Augmenter("specaugment", "rcmae.augment.specaugment:SpecAugment", "rcmae.augment.specaugment:MaskOptions", False,
              "random time and frequency masks written as variants (a quick augmenter for tests and drills)"),
)}

SCORES = {entry.name: entry for entry in (
    Score("mahalanobis", "rcmae.detect.scores:mahalanobis_score", "rcmae extension"),
    Score("embedding", "rcmae.detect.scores:embedding_score", "rcmae extension"),
    Score("id_logprob", "rcmae.detect.scores:id_logprob_score", "the paper's score"),
    Score("rhythm", "rcmae.detect.scores:rhythm_score", "rcmae extension"),
    Score("patch", "rcmae.detect.scores:patch_score", "rcmae extension", positive=False),
    Score("combined", "rcmae.detect.scores:combined_score", "rcmae extension"),
    Score("knn", "rcmae.detect.scores:knn_score", "rcmae extension"),
    Score("stats", "rcmae.detect.scores:stats_score", "rcmae extension"),
    Score("fused", "rcmae.detect.scores:fused_score", "rcmae extension"),
)}


@dataclass(frozen=True)
class Reference:
    """A detector RC-MAE is compared with, fitted on one machine type's train clips at a time."""

    name: str              # its name in metrics.json and report.md
    target: str            # "module:function": (train log-mels, machine keys, BaselineConfig, seed) -> scorer
    threshold_per_id: bool  # decision thresholds per machine ID (else one per type, as the official AE baseline)
    doc: str

    def load(self):
        return load(self.target)


REFERENCES = {entry.name: entry for entry in (
    Reference("dcase2020_ae", "rcmae.baseline:fit_ae", False, "the DCASE 2020 dense autoencoder baseline"),
    Reference("floor", "rcmae.baseline:fit_floor_scorer", True,
              "a per-ID Gaussian on each clip's log-mel mean and standard deviation over time"),
)}
