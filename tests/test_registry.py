"""One registry per pluggable kind: a new augmenter is one entry, and config validation, the CLI's choices,
the actor-pool plan and the pipeline's factory all see it."""

import pytest

from rcmae import registry
from rcmae.cli import build_parser
from rcmae.config import AugmentConfig, ConfigError, tiny
from rcmae.distributed.augment_pipeline import build_augmenter
from rcmae.distributed.runtime import pool_plan


@pytest.fixture
def echo(monkeypatch):
    """A new augmenter registered as a user would: one entry (here reusing SpecAugment's class)."""
    entry = registry.Augmenter("echo", "rcmae.augment.specaugment:SpecAugment", True, "test entry")
    monkeypatch.setitem(registry.AUGMENTERS, "echo", entry)
    return entry


def test_a_registered_augmenter_is_known_everywhere(echo):
    config = tiny().override({"augment.augmenter": "echo"})
    assert pool_plan(config.augment, {"CPU": 4.0, "GPU": 2.0})["num_gpus"] == 1  # needs_gpu, read from the entry
    assert type(build_augmenter(config)).__name__ == "SpecAugment"
    args = build_parser().parse_args(["augment", "--data", "d", "--out", "o", "--augmenter", "echo"])
    assert args.augmenter == "echo"


def test_an_unregistered_augmenter_is_refused_by_name():
    with pytest.raises(ConfigError, match="must be one of .*'factory-mix'"):
        AugmentConfig(augmenter="echo")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["augment", "--data", "d", "--out", "o", "--augmenter", "echo"])


def test_every_entry_loads_and_every_score_says_where_it_comes_from():
    for entry in registry.AUGMENTERS.values():
        assert entry.load().name == entry.name
    assert registry.SCORES["id_logprob"] == "the paper's score"
    assert set(registry.SCORES.values()) == {"the paper's score", "rcmae extension"}
