from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rcmae.data.layout import UNKNOWN, LayoutError, index_clips, parse_clip_name


def touch(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("relative, expected", [
    ("dev_data/fan/train/normal_id_00_00000012.wav",
     dict(machine_type="fan", machine_id="00", split="train", label="normal", domain="source")),
    ("dev_data/ToyCar/test/anomaly_id_03_00000001.wav",
     dict(machine_type="ToyCar", machine_id="03", split="test", label="anomaly", domain="source")),
    ("eval_data/pump/test/id_05_00000042.wav",
     dict(machine_type="pump", machine_id="05", split="test", label=UNKNOWN, domain="source")),
    ("dev/bearing/train/section_01_source_train_normal_0007_vel_6_loc_A.wav",
     dict(machine_type="bearing", machine_id="01", split="train", label="normal", domain="source",
          attributes="vel_6_loc_A")),
    ("dev/gearbox/test/section_02_target_test_anomaly_0003.wav",
     dict(machine_type="gearbox", machine_id="02", split="test", label="anomaly", domain="target", attributes="")),
    ("dev/fan/target_test/section_00_target_test_normal_0001.wav",
     dict(machine_type="fan", machine_id="00", split="test", label="normal", domain="target")),
    ("eval/valve/test/section_03_0012.wav",
     dict(machine_type="valve", machine_id="03", split="test", label=UNKNOWN, domain=UNKNOWN)),
])
def test_every_grammar_parses(tmp_path, relative, expected):
    row = parse_clip_name(touch(tmp_path, relative))
    for key, value in expected.items():
        assert row[key] == value, key


@pytest.mark.parametrize("relative, fragment", [
    ("dev_data/fan/train/clip_0001.wav", "fits no known grammar"),
    ("dev_data/fan/train/normal_id_0_00000001.wav", "fits no known grammar"),
    ("dev_data/fan/train/broken_id_00_00000001.wav", "fits no known grammar"),
    ("dev_data/fan/validation/normal_id_00_00000001.wav", "cannot tell the split"),
    ("dev_data/fan/train/id_00_00000001.wav", "unlabelled file name in a train folder"),
    ("dev_data/fan/train/anomaly_id_00_00000001.wav", "anomalous clip in a train folder"),
    ("dev/fan/train/section_00_source_train_anomaly_0001.wav", "anomalous clip in a train folder"),
])
def test_bad_names_raise_with_file_and_patterns(tmp_path, relative, fragment):
    path = touch(tmp_path, relative)
    with pytest.raises(LayoutError) as info:
        parse_clip_name(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_index_accepts_dataset_dev_and_type_roots(tmp_path):
    touch(tmp_path, "dev_data/fan/train/normal_id_00_00000000.wav")
    touch(tmp_path, "dev_data/fan/test/anomaly_id_00_00000000.wav")
    touch(tmp_path, "dev_data/pump/train/normal_id_02_00000000.wav")
    touch(tmp_path, "eval_data/pump/test/id_01_00000000.wav")
    assert len(index_clips(tmp_path)) == 4
    assert len(index_clips(tmp_path / "dev_data")) == 3
    only_fan = index_clips(tmp_path / "dev_data" / "fan")
    assert set(only_fan.table["machine_type"].to_pylist()) == {"fan"}
    assert sorted(set(index_clips(tmp_path).table["machine_id"].to_pylist())) == ["00", "01", "02"]


def test_strict_raises_and_lenient_skips_and_reports(tmp_path):
    touch(tmp_path, "dev_data/fan/train/normal_id_00_00000000.wav")
    bad = touch(tmp_path, "dev_data/fan/train/recording.wav")
    with pytest.raises(LayoutError, match="recording.wav"):
        index_clips(tmp_path)
    index = index_clips(tmp_path, lenient=True)
    assert len(index) == 1
    assert [path for path, _ in index.skipped] == [str(bad)]


def test_empty_and_missing_roots(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        index_clips(tmp_path / "nope")
    with pytest.raises(LayoutError, match="no DCASE-layout"):
        index_clips(tmp_path)


def test_table_round_trips_through_parquet(tmp_path):
    touch(tmp_path, "dev_data/fan/train/normal_id_00_00000000.wav")
    table = index_clips(tmp_path).table
    pq.write_table(table, tmp_path / "index.parquet")
    assert pq.read_table(tmp_path / "index.parquet").equals(table)


def test_links_back_up_the_tree_are_indexed_once_and_reported(tmp_path):
    """A link to a folder above it would otherwise be walked again and again (inventing machine types out of the
    repeated path); two such loops would never finish."""
    root = tmp_path / "data"
    touch(root, "dev_data/fan/train/normal_id_00_00000000.wav")
    touch(root, "dev_data/fan/test/anomaly_id_00_00000001.wav")
    (root / "dev_data" / "fan" / "train" / "up").symlink_to(root / "dev_data")
    (root / "dev_data" / "fan" / "test" / "again").symlink_to(root)
    index = index_clips(root, lenient=True)
    assert index.table.num_rows == 2 and set(index.table["machine_type"].to_pylist()) == {"fan"}
    assert len(index.skipped) == 2 and all("a link to a folder already indexed" in why for _, why in index.skipped)


def test_the_attributes_of_a_file_name_are_what_indexing_reads():
    from rcmae.data.layout import parse_clip_name
    from rcmae.data.names import attributes_of

    for name, expected in (("section_00_source_test_normal_0003_vel_8_loc_A.wav", "vel_8_loc_A"),
                           ("section_01_target_train_normal_0000.wav", ""), ("normal_id_00_00000001.wav", ""),
                           ("section_00_0003.wav", ""), ("recording.wav", "")):
        assert attributes_of(name) == expected, name
    clip = parse_clip_name(Path("/d/fan/test/section_00_source_test_normal_0003_vel_8_loc_A.wav"))
    assert clip["attributes"] == attributes_of(clip["file_name"])
