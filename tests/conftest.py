"""Shared fixtures: one toy-factory data set and one local Ray instance per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """The `small` toy factory (all six types), synthesised once per session."""
    from rcmae.data.synth import synthesize

    out = tmp_path_factory.mktemp("toy")
    synthesize(out, preset="small", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_config():
    from rcmae.config import tiny

    return tiny()


@pytest.fixture(scope="session")
def tiny_audioldm(tmp_path_factory):
    """A tiny random AudioLDM saved in the diffusers layout, loaded through the real loader."""
    from rcmae.augment.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny_audioldm"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs) for every Ray test of the session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", ignore_reinit_error=True)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
