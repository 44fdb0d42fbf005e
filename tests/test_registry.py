"""One registry per pluggable kind: a new augmenter is one entry, and config validation, the CLI's choices,
the actor-pool plan and the pipeline's factory all see it."""

from dataclasses import dataclass

import numpy as np
import pytest

from rcmae import registry
from rcmae.ablation import arm_name
from rcmae.augment.base import Augmented
from rcmae.cli import build_parser
from rcmae.config import ConfigError, describe, tiny
from rcmae.config_input import Section, doc_field
from rcmae.data.classes import ClipClasses
from rcmae.distributed.augment_pipeline import augmentation
from rcmae.distributed.runtime import pool_plan
from rcmae.evaluate.run_report import provenance_line
from rcmae.sections import AugmentConfig


@dataclass
class EchoOptions(Section):
    section = "augment"
    delay: int = doc_field("Samples the echo lags the clip by.", 160)


class Echo:
    """A new augmenter as a user writes one: a class, its options dataclass and one registry entry."""

    name, domain = "echo", "wave"

    def __init__(self, options: EchoOptions, sample_rate: int = 16000, device: str = "cpu"):
        self.options = options

    def augment(self, items, seeds):
        return [Augmented(item + 0.5 * np.roll(item, self.options.delay), {"augmenter": self.name}) for item in items]


@pytest.fixture
def echo(monkeypatch):
    entry = registry.Augmenter("echo", f"{__name__}:Echo", f"{__name__}:EchoOptions", True, "test entry",
                               "rcmae's test echo", "echo (a delayed copy of the clip)")
    monkeypatch.setitem(registry.AUGMENTERS, "echo", entry)
    return entry


def test_a_registered_augmenter_is_known_everywhere(echo):
    config = tiny().override({"augment.augmenter": "echo", "augment.delay": "80"})
    assert config.augment.options == EchoOptions(delay=80) and config.to_dict()["augment"]["delay"] == 80
    assert "  delay: 80  # Samples the echo lags the clip by." in describe(config)
    assert pool_plan(config.augment, {"CPU": 4.0, "GPU": 2.0}).num_gpus == 1  # needs_gpu, read from the entry
    made = augmentation(config.augment, config.audio.sample_rate)
    assert isinstance(made.augmenter, Echo) and made.augmenter.options.delay == 80
    assert (made.variants, made.seed) == (config.augment.variants, config.augment.seed)
    args = build_parser().parse_args(["augment", "--data", "d", "--out", "o", "--augmenter", "echo"])
    assert args.augmenter == "echo"
    # what the report and the ablation call it, and that `ablate` takes it as its augmented arm: from the entry
    assert "augmenter `echo` (rcmae's test echo)" in provenance_line("tiny", config.augment, "fused")
    assert arm_name(config.augment) == "echo (a delayed copy of the clip)"
    assert build_parser().parse_args(["ablate", "--data", "d", "--out", "o", "--augmenter", "echo"]).augmenter == (
        "echo")


def test_an_unregistered_augmenter_is_refused_by_name():
    with pytest.raises(ConfigError, match="must be one of .*'factory-mix'"):
        AugmentConfig(augmenter="echo")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["augment", "--data", "d", "--out", "o", "--augmenter", "echo"])


def test_every_entry_loads_and_every_score_says_where_it_comes_from():
    for entry in registry.AUGMENTERS.values():
        assert entry.load().name == entry.name and issubclass(entry.load_options(), Section)
    assert all(callable(entry.load()) for entry in registry.SCORES.values())
    assert registry.SCORES["id_logprob"].origin == "the paper's score"
    assert {entry.origin for entry in registry.SCORES.values()} == {"the paper's score", "rcmae extension"}


def test_a_registered_score_is_computed_and_written_by_name(monkeypatch):
    from encoded_values import encoded as make_encoded
    from rcmae.detect.calibration import fit_detector
    from rcmae.detect.detector import anomaly_scores
    from rcmae.sections import ScoreConfig

    # a new score: a function (here below) and one registry entry
    monkeypatch.setitem(registry.SCORES, "norm", registry.Score("norm", f"{__name__}:pooled_norm", "rcmae extension",
                                                                "the pooled features' length"))
    assert ScoreConfig(method="norm").method == "norm"
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(30, 3))
    encoded = make_encoded(pooled, pooled, -rng.gamma(2.0, size=(30, 1)))
    clips = ClipClasses.as_machine(["a/00"], "a/00", 30)
    detector = fit_detector(encoded, ["a/00"] * 30, clips, ScoreConfig(components=1))
    np.testing.assert_allclose(anomaly_scores("norm", encoded, ["a/00"] * 30, clips, detector),
                               np.linalg.norm(pooled, axis=1))
    assert "norm" in detector.thresholds


def pooled_norm(encoded, keys, classes, detector):
    return np.linalg.norm(encoded.pooled, axis=1)
