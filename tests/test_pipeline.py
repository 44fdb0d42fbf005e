import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcmae.config import tiny
from rcmae.distributed.augment_pipeline import REJECTS, SUMMARY, run_augment

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def small_root(toy_root, tmp_path_factory):
    """Two machine IDs of the toy factory plus one corrupt and one badly named file."""
    root = tmp_path_factory.mktemp("pipeline_data") / "dev_data"
    for machine_type, machine_id in (("fan", "00"), ("valve", "02")):
        for split in ("train", "test"):
            source = toy_root / "dev_data" / machine_type / split
            for path in sorted(source.glob(f"*_id_{machine_id}_*.wav"))[:6]:
                target = root / machine_type / split / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
    (root / "fan" / "train" / "normal_id_00_00000099.wav").write_bytes(b"RIFF\x00\x00 not audio")
    (root / "fan" / "train" / "notes.wav").write_bytes(b"")
    return root


def config(augmenter="factory-mix", **extra):
    return tiny().override({"augment.augmenter": augmenter, "augment.variants": 2, "augment.batch_size": 4,
                            **extra})


def read(out):
    table = pq.read_table(out / "features").sort_by("path")
    return table.to_pylist()


def test_every_clip_accounted_for_and_corrupt_file_rejected(ray_session, small_root, tmp_path, caplog):
    with caplog.at_level("INFO", logger="rcmae"):
        summary = run_augment(small_root, tmp_path, config())
    # the step ends with one plain line of what it did and how fast
    assert re.search(r"augment: 25 clips \(24 usable, 2 rejected\), 24 augmented variants by \d actor\(s\), "
                     r"in [\d.]+ s \([\d.]+ clips/s\)", caplog.text), caplog.text
    rows = read(tmp_path)
    assert len(rows) == 25  # 24 clips + the corrupt one; the badly named file is rejected by name
    bad = [r for r in rows if r["error"]]
    assert [r["file_name"] for r in bad] == ["normal_id_00_00000099.wav"]
    assert "unreadable or truncated" in bad[0]["error"]
    for row in rows:
        if row["error"]:
            continue
        expected = 2 if row["split"] == "train" else 0
        assert len(row["augmented"]) == expected and len(json.loads(row["provenance"])) == expected
        assert len(row["features"]) == 128 * 64
    rejects = pq.read_table(tmp_path / REJECTS).to_pylist()
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rejects) == ["normal_id_00_00000099.wav", "notes.wav"]
    assert summary["augmented_variants"] == 2 * 12  # 12 readable train clips
    assert json.loads((tmp_path / SUMMARY).read_text())["clips"] == 25


def test_more_than_one_actor_when_cpus_allow(ray_session, small_root, tmp_path):
    run_augment(small_root, tmp_path, config(**{"augment.batch_size": 2}))
    workers = {p["worker"] for r in read(tmp_path) for p in json.loads(r["provenance"])}
    assert len(workers) >= 2


def test_interrupted_run_resumed_equals_uninterrupted(ray_session, small_root, tmp_path):
    run_augment(small_root, tmp_path / "whole", config())
    run_augment(small_root, tmp_path / "resumed", config(), limit=9)  # "interrupted" after 9 clips
    first_shards = set((tmp_path / "resumed" / "features").glob("*.parquet"))
    (tmp_path / "resumed" / "features" / "torn.parquet").write_bytes(b"PAR1 half a file")
    run_augment(small_root, tmp_path / "resumed", config())
    assert first_shards <= set((tmp_path / "resumed" / "features").glob("*.parquet"))  # not redone
    whole, resumed = read(tmp_path / "whole"), read(tmp_path / "resumed")
    assert [r["path"] for r in whole] == [r["path"] for r in resumed]  # nothing missing, nothing twice
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(np.asarray(a["augmented"] or [], dtype=np.float32),
                                      np.asarray(b["augmented"] or [], dtype=np.float32))
        strip = lambda p: [{k: v for k, v in x.items() if k != "worker"} for x in json.loads(p)]  # noqa: E731
        assert strip(a["provenance"]) == strip(b["provenance"])


def test_tiny_audioldm_through_the_pipeline(ray_session, small_root, tiny_audioldm, tmp_path):
    cfg = config("audioldm", **{"augment.model": str(tiny_audioldm), "augment.steps_min": 10,
                                "augment.steps_max": 12, "augment.t0": 0.2, "augment.variants": 1})
    run_augment(small_root / "valve" / "train", tmp_path, cfg, limit=4)
    rows = [r for r in read(tmp_path) if r["split"] == "train"]
    provenance = [json.loads(r["provenance"])[0] for r in rows]
    assert rows and all(10 <= p["steps"] <= 12 and p["model"] == str(tiny_audioldm) for p in provenance)
    assert len({p["seed"] for p in provenance}) == len(provenance)
    assert all(np.all(np.isfinite(r["augmented"][0])) for r in rows)
