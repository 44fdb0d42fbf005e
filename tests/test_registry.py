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
    assert pool_plan(config.augment, {"CPU": 4.0, "GPU": 2.0}).num_gpus == 1  # needs_gpu, read from the entry
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
    assert all(callable(entry.load()) for entry in registry.SCORES.values())
    assert registry.SCORES["id_logprob"].origin == "the paper's score"
    assert {entry.origin for entry in registry.SCORES.values()} == {"the paper's score", "rcmae extension"}


def test_a_registered_score_is_computed_and_written_by_name(monkeypatch):
    import numpy as np

    from encoded_values import encoded as make_encoded
    from rcmae.config import ScoreConfig
    from rcmae.detect.detector import anomaly_scores, fit_detector

    # a new score: a function (here below) and one registry entry
    monkeypatch.setitem(registry.SCORES, "norm", registry.Score("norm", f"{__name__}:pooled_norm", "rcmae extension"))
    assert ScoreConfig(method="norm").method == "norm"
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(30, 3))
    encoded = make_encoded(pooled, pooled, -rng.gamma(2.0, size=(30, 1)))
    detector = fit_detector(encoded, ["a/00"] * 30, ["a/00"], ScoreConfig(components=1))
    np.testing.assert_allclose(anomaly_scores("norm", encoded, ["a/00"] * 30, ["a/00"], detector),
                               np.linalg.norm(pooled, axis=1))
    assert "norm" in detector.thresholds


def pooled_norm(encoded, keys, classes, detector):
    import numpy as np

    return np.linalg.norm(encoded.pooled, axis=1)
