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
    """One local Ray instance (2 CPUs) for every Ray test of the session, started as rcmae starts its own."""
    import ray

    from rcmae.distributed.runtime import ensure_ray

    ensure_ray(num_cpus=2)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def toy_features(toy_root, tmp_path_factory):
    """Features of two machine types of the toy factory (specaugment pairs), written without Ray."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rcmae.augment.featurize import Augmentation, Featurizer, read_batch
    from rcmae.augment.specaugment import MaskOptions, SpecAugment
    from rcmae.config import tiny
    from rcmae.data.layout import index_clips

    config = tiny()
    table = index_clips(toy_root).table
    table = table.filter(pc.is_in(table["machine_type"], value_set=pa.array(["fan", "valve"])))
    folder = tmp_path_factory.mktemp("toy_features") / "features"
    folder.mkdir()
    featurizer = Featurizer(config.features, config.audio.sample_rate,
                            Augmentation(SpecAugment(MaskOptions()), config.augment.variants, config.augment.seed))
    for start in range(0, table.num_rows, 64):
        batch = read_batch(table.slice(start, 64).to_pandas(), config.audio)
        pq.write_table(featurizer(batch), folder / f"part-{start:05d}.parquet")
    return folder


@pytest.fixture(scope="session")
def finetuned_model(toy_features, tmp_path_factory):
    """A fine-tuned model folder (in-process, 1 epoch per stage) on `toy_features`: copy it before changing it."""
    from rcmae import stages
    from rcmae.config import tiny

    config = tiny().override({"pretrain.epochs": 1, "finetune.epochs": 1, "scale.num_workers": 0,
                              "pretrain.batch_size": 32, "finetune.batch_size": 32})
    folder = tmp_path_factory.mktemp("model")
    pretrained = stages.pretrain(config, toy_features, folder / "pretrain")
    return stages.finetune(config, toy_features, pretrained, folder / "finetune")


@pytest.fixture
def quick_config():
    """tiny, in-process, two short epochs per stage."""
    from rcmae.config import tiny

    return tiny().override({"pretrain.epochs": 2, "finetune.epochs": 2, "pretrain.batch_size": 32,
                            "finetune.batch_size": 32, "scale.num_workers": 0})


def pytest_collection_modifyitems(config, items):
    """End-to-end tests run last: `ray stop` ends every Ray process on the machine, and a driver whose
    raylet dies exits with it, so no test may hold the session's Ray instance afterwards."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture
def no_local_ray():
    """Shut the session's in-process Ray down before a test that starts and stops its own cluster."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
