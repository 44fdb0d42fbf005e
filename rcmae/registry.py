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
    provenance: str  # what report.md says it is: the paper's, or rcmae's (and what for)
    # what the ablation (the paper's Table 3) calls it as its augmented arm; None: not an augmented arm (the
    # masking Baseline is the other arm, written variants of masks are no augmentation the paper compares)
    ablation_arm: str | None
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
    doc: str     # what it measures (the config's description of score.method lists these)
    positive: bool = True  # a positive distance, which a fusion standardises as its log (else as it is: a log)
    # a few-shot ID's threshold from its type's train clips, each scored against its own ID (a score of the ID's
    # centroid or class, which a few clips give no spread around); else the type's clips scored as this ID
    few_shot_threshold_from_type: bool = False
    on_edge: bool = False  # computed by the edge runtime (rcmae.edge: numpy and onnxruntime, no torch)

    def load(self):
        return load(self.target)


AUGMENTERS = {entry.name: entry for entry in (
    Augmenter("factory-mix", "rcmae.augment.factory_mix:FactoryMix", "rcmae.augment.factory_mix:FactoryMixOptions",
              False,
              "weight-free: synthetic factory noise chosen by the same prompts, mixed at a random SNR",
              "rcmae's, standing in for the paper's AudioLDM",
              "factory-mix (stands in for AudioLDM: no diffusion weights given)"),
    Augmenter("audioldm", "rcmae.augment.audioldm:AudioLDMAugmenter", "rcmae.augment.audioldm:AudioLDMOptions",
              True,
              "AudioLDM SDEdit diffusion (the paper's; needs `model`)", "the paper's AudioLDM diffusion",
              "diffusion (AudioLDM SDEdit, {model})"),
    Augmenter("masking", "rcmae.augment.specaugment:StepMasking", "rcmae.augment.specaugment:MaskOptions", False,
              "fresh random time and frequency masks on every training batch (the paper's Table 3 Baseline)",
              "the paper's Table 3 Baseline: fresh time/frequency masks every training batch", None, per_step=True),
    Augmenter("specaugment", "rcmae.augment.specaugment:SpecAugment", "rcmae.augment.specaugment:MaskOptions", False,
              "random time and frequency masks written as variants (a quick augmenter for tests and drills)",
              "rcmae's: time/frequency masks written as variants", None),
)}

SCORES = {entry.name: entry for entry in (
    Score("mahalanobis", "rcmae.detect.scores:mahalanobis_score", "rcmae extension",
          "distance from a Gaussian of the ID's train features", on_edge=True),
    Score("embedding", "rcmae.detect.scores:embedding_score", "rcmae extension",
          "cosine distance to the ID's train centroid", few_shot_threshold_from_type=True),
    Score("id_logprob", "rcmae.detect.scores:id_logprob_score", "the paper's score",
          "-log p(true class | clip), the class a machine ID or attributes (finetune.classes)",
          few_shot_threshold_from_type=True),
    Score("rhythm", "rcmae.detect.scores:rhythm_score", "rcmae extension",
          "distance of the log-mel's band-envelope autocorrelation from the ID's", on_edge=True),
    Score("patch", "rcmae.detect.scores:patch_score", "rcmae extension", "top 5 % of the anomaly map",
          positive=False),
    Score("combined", "rcmae.detect.scores:combined_score", "rcmae extension",
          "the larger of mahalanobis and rhythm, each standardised on held-out train clips"),
    Score("knn", "rcmae.detect.scores:knn_score", "rcmae extension",
          "distance to the ID's nearest train embeddings"),
    Score("stats", "rcmae.detect.scores:stats_score", "rcmae extension",
          "distance of the log-mel's band means and deviations from the ID's: the floor's statistics", on_edge=True),
    Score("fused", "rcmae.detect.scores:fused_score", "rcmae extension",
          "the largest of stats, mahalanobis and rhythm, each standardised on held-out train clips"),
)}


@dataclass(frozen=True)
class Reference:
    """A detector RC-MAE is compared with, fitted on one machine type's train clips at a time."""

    name: str              # its name in metrics.json and report.md
    target: str            # "module:function": (train log-mels, machine keys, BaselineConfig, seed) -> scorer
    threshold_per_id: bool  # decision thresholds per machine ID (else one per type, as the official AE baseline)
    doc: str
    folder: str            # its folder in a run folder
    label: str             # its row in report.md
    optional: bool         # `rcmae run --no-baseline` leaves it out (a slow one); the others run always

    def load(self):
        return load(self.target)


REFERENCES = {entry.name: entry for entry in (
    Reference("dcase2020_ae", "rcmae.baseline:fit_ae", False, "the DCASE 2020 dense autoencoder baseline",
              "baseline", "DCASE 2020 AE baseline", optional=True),
    Reference("floor", "rcmae.baseline:fit_floor_scorer", True,
              "a per-ID Gaussian on each clip's log-mel mean and standard deviation over time",
              "floor", "floor: per-ID Gaussian on log-mel mean + std", optional=False),
)}
