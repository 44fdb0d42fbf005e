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
