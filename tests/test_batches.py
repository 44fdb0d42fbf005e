"""Training batches: both paths share one batch maker, batches mix machine IDs as a uniform permutation
would, and differ from epoch to epoch."""

import math

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from rcmae.config import tiny
from rcmae.data.classes import train_classes
from rcmae.data.feature_table import machine_keys, write_synthetic_features
from rcmae.features import Normalizer
from rcmae.train.batches import BatchMaker, epoch_rng, shuffled
from rcmae.train.stage import FINETUNE, PRETRAIN

IDS, PER_ID, BATCH = 20, 50, 64


def expected_distinct_ids(ids: int, per_id: int, batch: int) -> float:
    """Mean number of distinct IDs in `batch` rows of a uniform permutation of `ids * per_id` rows."""
    total = ids * per_id
    return ids * (1 - math.comb(total - per_id, batch) / math.comb(total, batch))


def distinct_ids_per_batch(batches, classes) -> list[int]:
    return [len(set(batch["labels"].tolist())) for batch in batches]


def test_shuffle_buffer_makes_batches_from_every_row_once():
    pieces = [pa.table({"x": np.arange(start, start + 10)}) for start in range(0, 100, 10)]
    batches = list(shuffled(pieces, batch_size=8, buffer_rows=24, rng=np.random.default_rng(0)))
    rows = np.concatenate([b["x"].to_numpy() for b in batches])
    assert [b.num_rows for b in batches] == [8] * 12 + [4]
    assert sorted(rows.tolist()) == list(range(100))
    assert not np.array_equal(rows, np.sort(rows))


def test_stage_batches_pair_each_clip_with_one_of_its_own_variants(tmp_path):
    folder = write_synthetic_features(tmp_path / "features", 40, machine_ids=4, n_mels=16, n_frames=8, variants=3)
    config = tiny().override({"features.n_mels": 16, "features.n_frames": 8, "features.patch_freq": 8,
                              "features.patch_time": 8})
    identity = Normalizer(mean=np.zeros(16), std=np.ones(16))
    table = pa.concat_tables(pa.parquet.read_table(p) for p in sorted(folder.glob("*.parquet")))
    batch = BatchMaker(PRETRAIN, config, identity, [], 8).collate(table, np.random.default_rng(0))
    for row in range(table.num_rows):
        variants = np.array(table["augmented"][row].as_py()).reshape(3, 16, 8)
        assert any(np.array_equal(batch["augmented"][row], v) for v in variants)
        np.testing.assert_array_equal(batch["original"][row].reshape(-1), table["features"][row].as_py())
    by, classes = train_classes(folder, "auto")
    assert by == "id"  # several IDs of one type, no attributes
    labelled = BatchMaker(FINETUNE, config, identity, classes, 8).collate(table, np.random.default_rng(0))
    assert [classes[i] for i in labelled["labels"]] == machine_keys(table)


def test_the_masking_arm_draws_fresh_masks_per_batch_and_applies_them_in_the_step(tmp_path):
    """The ablation's masking: no written variants are read, every batch gets its own spans from the epoch's
    generator, and the step's augmented view is the batch's originals under exactly those spans."""
    import torch

    from rcmae.augment.specaugment import FREQ_SPANS, TIME_SPANS, apply_masks

    folder = write_synthetic_features(tmp_path / "features", 16, machine_ids=2, n_mels=16, n_frames=8, variants=1)
    config = tiny().override({"features.n_mels": 16, "features.n_frames": 8, "features.patch_freq": 8,
                              "features.patch_time": 8, "augment.augmenter": "masking"})
    assert "augmented" not in PRETRAIN.columns(config)
    table = pa.concat_tables(pa.parquet.read_table(p, columns=PRETRAIN.columns(config))
                             for p in sorted(folder.glob("*.parquet")))
    maker = BatchMaker(PRETRAIN, config, Normalizer(mean=np.zeros(16), std=np.ones(16)), [], 4)
    first, second = list(maker([table], np.random.default_rng(0)))[:2]
    assert first[FREQ_SPANS].shape == (4, config.augment.options.freq_masks, 2)
    assert first[TIME_SPANS].shape == (4, config.augment.options.time_masks, 2)
    assert not np.array_equal(first[FREQ_SPANS], second[FREQ_SPANS])
    seen = {}

    def objective(original, augmented):
        seen.update(original=original, augmented=augmented)
        return {}

    batch = {key: torch.as_tensor(value) for key, value in first.items() if key != "paths"}
    PRETRAIN.step(objective, batch)
    assert torch.equal(seen["augmented"], apply_masks(batch["original"], batch[FREQ_SPANS], batch[TIME_SPANS]))
    assert not torch.equal(seen["augmented"], batch["original"])


def test_masks_cover_exactly_their_spans_with_the_clips_mean():
    import torch

    from rcmae.augment.specaugment import apply_masks

    specs = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    freq = torch.tensor([[[1, 2]], [[3, 1]]])  # clip 0: bands 1-2; clip 1: band 3
    time = torch.tensor([[[0, 1]], [[2, 2]]])  # clip 0: frame 0; clip 1: frames 2-3
    out = apply_masks(specs, freq, time)
    expected = specs.clone()
    expected[0, 1:3, :] = expected[0, :, 0:1] = specs[0].mean()
    expected[1, 3, :] = specs[1].mean()
    expected[1, :, 2:4] = specs[1].mean()
    assert torch.equal(out, expected)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_batches_mix_machine_ids_like_a_permutation(ray_session, tmp_path):
    """1,000 clips of 20 IDs, indexed in path order (one ID after another) and written by the pipeline."""
    from rcmae.distributed.augment_pipeline import run_augment
    from rcmae.distributed.train import train_dataset

    folder = tmp_path / "data" / "dev_data" / "fan" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for machine in range(IDS):
        for clip in range(PER_ID):
            sf.write(folder / f"normal_id_{machine:02d}_{clip:08d}.wav",
                     0.1 * rng.standard_normal(4800).astype(np.float32), 16000)
    config = tiny().override({"augment.augmenter": "specaugment", "augment.variants": 1,
                              "audio.clip_seconds": 0.5, "features.n_frames": 16,
                              "scale.shuffle_buffer_batches": 1})  # at ~1,000 clips per ID no buffer mixes
    run_augment(tmp_path / "data", tmp_path / "augment", config)
    features = tmp_path / "augment" / "features"
    _, classes = train_classes(features, "id")
    maker = BatchMaker(FINETUNE, config, Normalizer(mean=np.zeros(128), std=np.ones(128)), classes, BATCH)
    # blocks of ~30 rows: at paper size a 128 MiB block holds ~250 clips of an ID's ~1,000, the same share
    context = ray_session.data.DataContext.get_current()
    saved, context.target_max_block_size = context.target_max_block_size, 30 * 128 * 16 * 4 * 2
    try:
        shard = train_dataset(config, FINETUNE, features).streaming_split(1, equal=True)[0]
    finally:
        context.target_max_block_size = saved
    expected = expected_distinct_ids(IDS, PER_ID, BATCH)
    epochs = []
    for epoch in range(3):
        batches = list(maker(shard.iter_batches(batch_size=None, batch_format="pyarrow"), epoch_rng(0, epoch, 0)))
        assert [len(b["labels"]) for b in batches] == [BATCH] * (IDS * PER_ID // BATCH) + [IDS * PER_ID % BATCH]
        full = batches[:-1]  # the epoch's remainder is a smaller batch, with fewer IDs by nature
        assert np.mean(distinct_ids_per_batch(full, classes)) == pytest.approx(expected, rel=0.1)
        epochs.append(np.concatenate([b["labels"] for b in batches]))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
