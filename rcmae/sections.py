"""The config sections: one validated dataclass per step (audio, features, model, augment, pretrain, finetune,
score, baseline, scale). Each field carries its meaning in `doc_field`; each section's defaults are the paper's
numbers. A function takes the sections it uses; the whole `rcmae.config.Config` travels only where all of it is
recorded (checkpoints, a stage's settings) or split up (the stage drivers)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rcmae.config_input import Section, check, coerce, doc_field, field_types
from rcmae.registry import AUGMENTERS, SCORES


@dataclass
class AudioConfig(Section):
    section = "audio"
    sample_rate: int = doc_field("Sample rate every clip is resampled to (Hz).", 16000)
    clip_seconds: float | None = doc_field(
        "Length every clip is padded/cropped to; None keeps each clip's own length.", None)
    pad_mode: Literal["zeros", "repeat"] = doc_field("How short clips are padded: 'zeros' or 'repeat'.", "repeat")
    min_seconds: float = doc_field("Clips shorter than this are rejected.", 0.25)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(1000 <= self.sample_rate <= 384000, f"audio.sample_rate must be in [1000, 384000] Hz, got "
                                                    f"{self.sample_rate}")
        check(self.clip_seconds is None or 0 < self.clip_seconds <= 600,
               f"audio.clip_seconds must be in (0, 600] or None, got {self.clip_seconds}")
        check(self.min_seconds >= 0, f"audio.min_seconds must be >= 0, got {self.min_seconds}")


@dataclass
class FeatureConfig(Section):
    section = "features"
    n_fft: int = doc_field("STFT window length (samples).", 1024)
    hop_length: int = doc_field("STFT hop (samples).", 512)
    n_mels: int = doc_field("Mel bands.", 128)
    f_min: float = doc_field("Lowest mel band edge (Hz).", 50.0)
    f_max: float = doc_field("Highest mel band edge (Hz).", 8000.0)
    n_frames: int = doc_field("Frames per clip after padding/cropping (a multiple of patch_time).", 320)
    patch_freq: int = doc_field("Patch height in mel bands.", 8)
    patch_time: int = doc_field("Patch width in frames.", 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.n_fft <= 65536 and 0 < self.hop_length <= self.n_fft,
               f"features: need 0 < hop_length <= n_fft <= 65536, got {self.hop_length}, {self.n_fft}")
        check(1 <= self.n_mels <= 1024 and 1 <= self.n_frames <= 100000,
               f"features: n_mels in [1, 1024] and n_frames in [1, 100000], got {self.n_mels}, {self.n_frames}")
        check(0 <= self.f_min < self.f_max, f"features: need 0 <= f_min < f_max, got {self.f_min}, {self.f_max}")
        check(self.n_mels % self.patch_freq == 0,
               f"features.n_mels ({self.n_mels}) must be a multiple of patch_freq ({self.patch_freq})")
        check(self.n_frames % self.patch_time == 0,
               f"features.n_frames ({self.n_frames}) must be a multiple of patch_time ({self.patch_time})")

    @property
    def grid(self) -> tuple[int, int]:
        return self.n_mels // self.patch_freq, self.n_frames // self.patch_time

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def patch_dim(self) -> int:
        return self.patch_freq * self.patch_time


@dataclass
class ModelConfig(Section):
    section = "model"
    embed_dim: int = doc_field("Encoder width.", 384)
    depth: int = doc_field("Encoder blocks.", 12)
    num_heads: int = doc_field("Encoder attention heads.", 6)
    decoder_embed_dim: int = doc_field("Decoder width.", 256)
    decoder_depth: int = doc_field("Decoder blocks.", 4)
    decoder_num_heads: int = doc_field("Decoder attention heads.", 8)
    mlp_ratio: float = doc_field("Transformer MLP hidden size / width.", 4.0)
    proj_dim: int = doc_field("Projection (embedding) size per branch.", 512)
    mask_ratio: float = doc_field(
        "Share of patches hidden from the encoder (the lowest share when mask_ratio_max is set).", 0.75)
    mask_ratio_max: float | None = doc_field("When set, each stage-1 batch hides a share drawn uniformly from "
                                             "[mask_ratio, mask_ratio_max] (the paper: 50-75 %).", None)
    norm_pix_loss: bool = doc_field("Normalise each target patch before the MSE (MAE paper option).", False)
    pooling: Literal["frequency", "mean"] = doc_field(
        "How encoder tokens become one clip vector: 'frequency' averages each frequency row over time and "
        "concatenates the rows (keeps where in the spectrum energy sits), 'mean' averages all tokens.", "frequency")
    weight_init: Literal["mae", "torch"] = doc_field(
        "'mae': the reference MAE's Xavier-uniform linear layers; 'torch': PyTorch's layer defaults (README "
        "compares them over three seeds).", "torch")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.embed_dim % self.num_heads == 0,
               f"model.embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        check(self.decoder_embed_dim % self.decoder_num_heads == 0,
               "model.decoder_embed_dim must be divisible by decoder_num_heads")
        check(0.0 <= self.mask_ratio < 1.0, f"model.mask_ratio must be in [0, 1), got {self.mask_ratio}")
        check(self.mask_ratio_max is None or self.mask_ratio <= self.mask_ratio_max < 1.0,
               f"model.mask_ratio_max must be in [mask_ratio, 1), got {self.mask_ratio_max}")
        check(self.depth > 0 and self.decoder_depth > 0, "model depths must be > 0")
        check(self.embed_dim % 4 == 0 and self.decoder_embed_dim % 4 == 0,
              f"model.embed_dim ({self.embed_dim}) and model.decoder_embed_dim ({self.decoder_embed_dim}) must be "
              f"multiples of 4 (the 2-D sin-cos position embedding splits each in four)")


@dataclass
class AugmentConfig(Section):
    """What every augmenter shares; its own options (`options`, the dataclass its registry entry names) sit
    beside these fields in YAML and `--set` (`augment.t0`, `augment.snr_db_min`, ...)."""

    section = "augment"
    # `augmenter` is a str checked against the registry (its one list of names), not a Literal repeating them
    augmenter: str = doc_field("; ".join(f"'{name}' ({entry.doc})" for name, entry in AUGMENTERS.items()) + ".",
                               "factory-mix")
    variants: int = doc_field("Augmented variants written per clip.", 2)
    seed: int = doc_field("Base seed; each clip's seed derives from it and the clip's path.", 0)
    options: Section | None = doc_field("The augmenter's options (its registry entry's dataclass); None: its "
                                        "defaults.", None)
    batch_size: int = doc_field("Clips per actor batch.", 8, runtime=True)
    num_actors: int | None = doc_field("Actor pool size; None picks from the cluster's resources now.", None,
                                       runtime=True)
    use_gpu: bool | None = doc_field("Augmentation actors on GPUs: true requests them from Ray (an autoscaler adds "
                                     "GPU nodes), false keeps them on CPUs, None uses GPUs when the cluster has "
                                     "them now and the augmenter's registry entry needs one (AudioLDM).", None,
                                     runtime=True)
    gpus_per_actor: float = doc_field("GPUs each augmentation actor reserves when on GPUs (0.5 packs two per GPU).",
                                      1.0, runtime=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.augmenter in AUGMENTERS,
              f"augment.augmenter must be one of {sorted(AUGMENTERS)}, got {self.augmenter!r}")
        kind = AUGMENTERS[self.augmenter].load_options()
        self.options = kind() if self.options is None else self.options
        check(isinstance(self.options, kind), f"augment: augmenter {self.augmenter!r} takes {kind.__name__} "
                                              f"options, got {type(self.options).__name__}")
        check(self.variants >= 1, f"augment.variants must be >= 1, got {self.variants}")
        check(self.batch_size >= 1, "augment.batch_size must be >= 1")
        check(self.num_actors is None or self.num_actors >= 1, "augment.num_actors must be >= 1 or None")
        check(self.gpus_per_actor > 0, "augment.gpus_per_actor must be > 0")

    def items(self) -> list[tuple[dataclasses.Field, Any]]:
        return [(f, value) for f, value in super().items() if f.name != "options"] + self.options.items()

    @classmethod
    def from_values(cls, values: dict[str, Any], given: set[str], strict: set[str]) -> "AugmentConfig":
        """The section from its YAML layout (`given`: keys whose values are to be coerced). A key that is neither
        a shared field nor an option of the chosen augmenter is dropped (another augmenter's option, from the
        preset or a folder an older rcmae recorded) unless the user gave it (`strict`) with a value other than
        that option's default: then it is an error."""
        shared = {name: kind for name, kind in field_types(cls).items() if name != "options"}
        augmenter = values.get("augmenter", "factory-mix")
        check(augmenter in AUGMENTERS, f"augment.augmenter must be one of {sorted(AUGMENTERS)}, got {augmenter!r}")
        options_cls = AUGMENTERS[augmenter].load_options()
        option_kinds = field_types(options_cls)
        stray = sorted(key for key in values if key not in shared and key not in option_kinds and key in strict
                       and not _another_augmenters_default(key, values[key]))
        check(not stray, f"augment.{', augment.'.join(stray)}: not an option of augmenter {augmenter!r} (its "
                         f"options: {', '.join(option_kinds)})")

        def typed(kinds: dict[str, Any]) -> dict[str, Any]:
            return {key: coerce(f"augment.{key}", value, kinds[key]) if key in given else value
                    for key, value in values.items() if key in kinds}

        return cls(**typed(shared), options=options_cls(**typed(option_kinds)))

    @property
    def per_step(self) -> bool:
        """The augmenter works on each training batch (nothing is written by the pipeline)."""
        return AUGMENTERS[self.augmenter].per_step

    @property
    def variants_written(self) -> int:
        return 0 if self.per_step else self.variants


def _another_augmenters_default(key: str, value: Any) -> bool:
    """An option of another augmenter at its default: what a file an older `rcmae config --out` wrote holds
    (every augmenter's options were in one section then), dropped rather than refused."""
    return any(key in field_types(kind) and getattr(kind(), key) == value
               for kind in {entry.load_options() for entry in AUGMENTERS.values()})


@dataclass
class OptimizerConfig(Section):
    """What both training stages share: schedule, batch and optimiser."""

    epochs: int = doc_field("Epochs of the stage.", 100)
    batch_size: int = doc_field("Global batch size (split over workers).", 128)
    lr: float = doc_field("Adam learning rate.", 1e-4)
    weight_decay: float = doc_field("Adam weight decay.", 0.0)
    schedule: Literal["constant", "cosine"] = doc_field(
        "Learning-rate schedule: 'constant' (the paper's plain Adam) or 'cosine' (an rcmae option: decay to ~0 "
        "over the stage, after `warmup_epochs`).", "cosine")
    warmup_epochs: int = doc_field("Linear warm-up epochs before the cosine decay (rcmae option; 'cosine' only).", 0)
    grad_clip: float = doc_field("Gradient norm clip (rcmae option; the paper clips nothing); 0 disables.", 1.0)
    tau: float = doc_field("Contrastive temperature.", 0.1)
    seed: int = doc_field("Seed for weights, masking and batch order.", 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.section
        check(self.epochs >= 1 and self.batch_size >= 2, f"{name}: epochs >= 1 and batch_size >= 2")
        check(0 < self.lr <= 1, f"{name}.lr must be in (0, 1], got {self.lr}")
        check(self.tau > 0, f"{name}.tau must be > 0, got {self.tau}")
        check(self.warmup_epochs >= 0 and self.grad_clip >= 0, f"{name}: warmup_epochs and grad_clip must be >= 0")
        check(self.schedule == "cosine" or self.warmup_epochs == 0,
               f"{name}: warmup_epochs needs schedule 'cosine' (the constant schedule has no warm-up)")


@dataclass
class PretrainConfig(OptimizerConfig):
    section = "pretrain"
    epochs: int = doc_field("Stage-1 epochs (paper: 400).", 400)
    tau: float = doc_field("InfoNCE temperature (Eq. 3).", 0.05)
    lambda_con: float = doc_field("Weight of InfoNCE (Eq. 8).", 0.3)
    lambda_vcr: float = doc_field("Weight of variance/covariance regularisation (Eq. 8).", 0.3)
    lambda_mae: float = doc_field("Weight of masked reconstruction (Eq. 8).", 0.4)
    contrastive: Literal["paper", "symmetric"] = doc_field(
        "'paper': Eq. 3 as written (original anchors, augmented positives and negatives); 'symmetric': NT-Xent "
        "over both views (an rcmae option).", "paper")

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = (self.lambda_con, self.lambda_vcr, self.lambda_mae)
        check(min(weights) >= 0 and sum(weights) > 0, f"pretrain: loss weights must be >= 0, sum > 0: {weights}")


@dataclass
class FinetuneConfig(OptimizerConfig):
    section = "finetune"
    tau: float = doc_field("Supervised contrastive temperature (Eq. 9).", 0.1)
    lambda_scl: float = doc_field("Weight of supervised contrastive loss (Eq. 10).", 0.5)
    lambda_ce: float = doc_field("Weight of cross-entropy over machine IDs (Eq. 10).", 0.5)
    use_augmented: bool = doc_field("Also train on augmented variants (labels carry over). Off by default, as the "
                                    "paper fine-tunes on the real train clips.", False)
    classes: Literal["id", "attributes", "auto"] = doc_field(
        "What stage 2 classifies: 'id' machine IDs (the paper, DCASE 2020), 'attributes' each machine's attribute "
        "values from the file names (type/section/attributes; DCASE 2022-2025), 'auto' attributes when a machine "
        "type has fewer than two IDs with train clips and the names carry attributes, else IDs.", "auto")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(min(self.lambda_scl, self.lambda_ce) >= 0 and self.lambda_scl + self.lambda_ce > 0,
               "finetune: loss weights must be >= 0 with a positive sum")


@dataclass
class ScoreConfig(Section):
    section = "score"
    # `method` is a str checked against the registry, as augment.augmenter
    method: str = doc_field("; ".join(f"'{name}' ({entry.origin}: {entry.doc})" for name, entry in SCORES.items())
                            + ".", "fused")
    components: int = doc_field("'mahalanobis': principal directions per ID with their own variance (the rest "
                                "share one); capped at the ID's train clips - 2.", 16)
    decision_percentile: float = doc_field("Gamma-fit percentile of held-out train-normal scores used as threshold.",
                                           0.9)
    max_fpr: float = doc_field("p of pAUC.", 0.1)
    knn_k: int = doc_field("'knn': nearest train embeddings of the ID whose distances are averaged.", 1)
    knn_distance: Literal["cosine", "euclidean"] = doc_field("'knn': distance between unit-length embeddings.",
                                                             "cosine")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.method in SCORES, f"score.method must be one of {sorted(SCORES)}, got {self.method!r}")
        check(1 <= self.components <= 4096, f"score.components must be in [1, 4096], got {self.components}")
        check(0 < self.decision_percentile < 1, "score.decision_percentile must be in (0, 1)")
        check(0 < self.max_fpr <= 1, "score.max_fpr must be in (0, 1]")
        check(1 <= self.knn_k <= 1000, f"score.knn_k must be in [1, 1000], got {self.knn_k}")


@dataclass
class BaselineConfig(Section):
    section = "baseline"
    epochs: int = doc_field("DCASE 2020 AE baseline epochs (official: 100).", 100)
    batch_size: int = doc_field("Baseline batch size in stacked-frame vectors (official: 512).", 512)
    lr: float = doc_field("Baseline Adam learning rate (official: 1e-3).", 1e-3)
    frames: int = doc_field("Consecutive log-mel frames stacked per input vector (official: 5).", 5)
    seed: int = doc_field("Baseline seed.", 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.epochs >= 1 and self.batch_size >= 2 and self.lr > 0 and self.frames >= 1,
               "baseline: epochs >= 1, batch_size >= 2, lr > 0, frames >= 1")


@dataclass
class ScaleConfig(Section):
    section = "scale"
    num_workers: int | None = doc_field("Ray Train workers; None picks from resources, 0 runs in-process.", None)
    use_gpu: bool | None = doc_field("Train (and run batch inference) on GPUs: true requests them from Ray (an "
                                     "autoscaler adds GPU nodes), None uses GPUs when the cluster has them now.", None)
    cpus_per_worker: float = doc_field("CPUs each train worker reserves (fractional leaves room for Ray Data).",
                                       0.5)
    max_failures: int = doc_field("Worker failures a run survives (resuming from the last checkpoint).", 2)
    keep_checkpoints: int = doc_field("Checkpoints kept per run (best by loss).", 2)
    cache_dataset: bool = doc_field("Materialise the train features in Ray's object store once, so epochs do not "
                                    "re-read Parquet; turn off when they outgrow the object store.", True)
    shuffle_buffer_batches: int = doc_field("Batches' worth of rows each training worker shuffles across (on top of "
                                            "a new random file/block order every epoch).", 8)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_workers is None or self.num_workers >= 0, "scale.num_workers must be >= 0")
        check(self.cpus_per_worker > 0, "scale.cpus_per_worker must be > 0")
        check(self.keep_checkpoints >= 1, "scale.keep_checkpoints must be >= 1")
        check(self.shuffle_buffer_batches >= 1, "scale.shuffle_buffer_batches must be >= 1")
