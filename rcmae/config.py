"""The whole configuration: its sections (`rcmae.sections`) together, the presets, YAML and `--set` overlays.

Every field carries its meaning in `field(metadata={"doc": ...})`; `describe()` prints them.
Presets: `tiny` fits a 2-core CPU machine in minutes (2 s crops), `cpu` keeps 10 s clips whole on a CPU,
`paper` is the paper's numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rcmae.config_input import Section, check, coerce, doc_field, field_types, load_yaml
from rcmae.errors import ConfigError
from rcmae.registry import AUGMENTERS
from rcmae.sections import (
    AudioConfig,
    AugmentConfig,
    BaselineConfig,
    FeatureConfig,
    FinetuneConfig,
    ModelConfig,
    PretrainConfig,
    ScaleConfig,
    ScoreConfig,
)


@dataclass
class Config:
    """The whole configuration. `Config()` is the `tiny` preset; each section's own defaults are the paper's
    numbers (so `paper()` names only where rcmae's sections differ from them)."""

    preset: str = doc_field("Name of the preset this config started from.", "tiny")
    audio: AudioConfig = field(default_factory=lambda: AudioConfig(clip_seconds=2.0))
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(n_frames=64, patch_freq=16, patch_time=8))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        embed_dim=96, depth=3, num_heads=3, decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2, proj_dim=128,
        mask_ratio=0.6))
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(variants=2, batch_size=16))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(
        epochs=12, batch_size=64, lr=1e-3, warmup_epochs=1, contrastive="symmetric"))
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=12, batch_size=64, lr=1e-3,
                                                                            warmup_epochs=1))
    score: ScoreConfig = field(default_factory=ScoreConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)  # the official 100 epochs: ~2 min here
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def to_dict(self) -> dict[str, Any]:
        return {name: value.to_dict() if isinstance(value, Section) else value for name, value in vars(self).items()}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: set[str] = frozenset()) -> "Config":
        """The named preset (`data["preset"]`, else `tiny`) with the sections and keys `data` gives laid over
        it: a partial file is its preset plus its changes. Values are converted to each field's type. `strict`:
        the dotted keys a user gave (a stray augmenter option among them is an error, not dropped)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        check(not unknown, f"unknown config sections: {sorted(unknown)}")
        name = data.get("preset") or "tiny"
        check(name in PRESETS, f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        merged = PRESETS[name]().to_dict()
        for section, values in data.items():
            if section == "preset":
                continue
            check(isinstance(values, dict) or values is None, f"config section {section!r} must be a mapping")
            merged[section].update(values or {})
        kwargs: dict[str, Any] = {"preset": name}
        for f in dataclasses.fields(cls):
            if f.name != "preset":
                kwargs[f.name] = _build_section(f.name, merged[f.name], set((data.get(f.name) or {}).keys()),
                                                strict)
        return cls(**kwargs)

    def override(self, dotted: dict[str, Any]) -> "Config":
        """A copy with `{"pretrain.tau": 0.1, ...}` applied (used by CLI flags and Tune)."""
        data = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            check(section in data and isinstance(data[section], dict) and (name in data[section] or
                                                                            section == "augment"),
                  f"unknown config key {key!r}")  # augment: another augmenter's options, checked when built
            data[section][name] = value
        return Config.from_dict(data, strict=set(dotted))


def _build_section(name: str, values: dict[str, Any], given: set[str], strict: set[str] = frozenset()) -> Any:
    section_cls = field_types(Config)[name]
    if section_cls is AugmentConfig:
        return AugmentConfig.from_values(values, given, {key.partition(".")[2] for key in strict
                                                         if key.startswith("augment.")})
    kinds = field_types(section_cls)
    unknown = set(values) - set(kinds)
    check(not unknown, f"unknown keys in config section {name!r}: {sorted(unknown)}")
    return section_cls(**{key: coerce(f"{name}.{key}", value, kinds[key]) if key in given else value
                          for key, value in values.items()})


def section_defaults() -> dict[str, dict[str, Any]]:
    """Each section's own defaults (the paper's numbers, and for a field added later the value that keeps what
    rcmae did before it), as `Config.to_dict()` lays them out."""
    return {name: kind().to_dict() for name, kind in field_types(Config).items() if dataclasses.is_dataclass(kind)}


def recorded_section(name: str, values: dict[str, Any]) -> Section:
    """A section as a run folder recorded it, in this rcmae's layout: each field added since at its section's
    default (the value that keeps what rcmae did before it existed), and the options of augmenters other than the
    recorded one dropped (an older rcmae kept every augmenter's options in `augment`)."""
    return _build_section(name, {**section_defaults()[name], **values} if name != "augment" else values, set(values))


def tiny() -> Config:
    """Fits a 2-core CPU machine: 2 s crops of every clip, a 3-block encoder, a few epochs."""
    return Config()


def cpu() -> Config:
    """Whole 10 s clips (DCASE's length) on a CPU: tiny's model and training over 8 x 16 patches of 16 mel
    bands x 20 frames (0.64 s), so a clip is 128 tokens. The AE baseline gets 20 epochs: a 10 s clip gives it
    five times the vectors of a 2 s one."""
    return dataclasses.replace(tiny(), preset="cpu", audio=AudioConfig(clip_seconds=10.0),
                               features=FeatureConfig(n_frames=320, patch_freq=16, patch_time=20),
                               baseline=BaselineConfig(epochs=20))


def paper() -> Config:
    """The paper: AudioLDM SDEdit with Table 1's prompts (Table 2's settings, eta as AudioLDM's transfer),
    10 s clips, 512 tokens, a 50-75 % mask, ViT depth 12 / 6 heads, Eq. 3 as written, 400 epochs of plain Adam
    at 1e-4 (no schedule, no clipping), the score -log p(true ID | clip), on GPUs (requested from Ray, so an
    autoscaling cluster starts GPU nodes)."""
    return Config(preset="paper", audio=AudioConfig(clip_seconds=10.0), features=FeatureConfig(),
                  model=ModelConfig(mask_ratio=0.5, mask_ratio_max=0.75), baseline=BaselineConfig(),
                  pretrain=PretrainConfig(schedule="constant", grad_clip=0.0),
                  finetune=FinetuneConfig(schedule="constant", grad_clip=0.0, classes="id"),
                  augment=AugmentConfig(augmenter="audioldm", use_gpu=True,
                                        options=AUGMENTERS["audioldm"].load_options().paper()),
                  score=ScoreConfig(method="id_logprob"), scale=ScaleConfig(use_gpu=True))


PRESETS = {"tiny": tiny, "cpu": cpu, "paper": paper}


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """A preset (default `tiny`), or a YAML file laid over the preset it names (or over `preset`), with dotted
    overrides applied. A file naming one preset and `preset` another is an error."""
    check(preset is None or preset in PRESETS, f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if path is None:
        config = PRESETS[preset or "tiny"]()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = load_yaml(path.read_text(), str(path)) or {}
        check(isinstance(data, dict), f"{path}: a config file is a mapping of sections")
        named = data.get("preset")
        check(preset is None or named is None or named == preset,
               f"{path} is based on preset {named!r} but --preset {preset!r} was given: drop one of them")
        given = {f"{section}.{key}" for section, values in data.items() if isinstance(values, dict) for key in values}
        config = Config.from_dict(dict(data, preset=named or preset or "tiny"), strict=given)
    return config.override(overrides or {})


def describe(config: Config) -> str:
    """Every field with its value and meaning, for `rcmae config`."""
    lines = []
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if not dataclasses.is_dataclass(value):
            lines.append(f"{section.name}: {value}")
            continue
        shared = (f"  # shared, then {value.augmenter}'s {type(value.options).__name__}"
                  if isinstance(value, AugmentConfig) else "")
        lines.append(f"{section.name}:{shared}")
        for f, field_value in value.items():
            lines.append(f"  {f.name}: {field_value!r}  # {f.metadata.get('doc', '')}")
    return "\n".join(lines)
