"""Recordings not named as DCASE names them: a folder tree of any file names and a manifest, indexed into the same
clip table and run end to end (README, "Your own recordings")."""

import json
import shutil
from pathlib import Path

import pytest

from dcase_files import read_scores
from rcmae.cli import main
from rcmae.data.layout import LayoutError, index_clips
from rcmae.data.synth import synthesize


@pytest.fixture(scope="module")
def valve_clips(tmp_path_factory) -> Path:
    """The toy factory's valve machines (DCASE 2020 names), to rename."""
    out = tmp_path_factory.mktemp("valve")
    synthesize(out, preset="small", types=("valve",))
    return out / "dev_data" / "valve"


def plant_tree(clips: Path, root: Path) -> dict[str, str]:
    """ROOT/valve/<line_N>/{train,test}/ with a plant's own names; returns new name -> the clip it copies."""
    copied = {}
    for machine_id, line in (("00", "line_A"), ("02", "line_B")):
        for number, clip in enumerate(sorted((clips / "train").glob(f"normal_id_{machine_id}_*.wav"))):
            copied[f"valve/{line}/train/2026-03-{number:03d}.wav"] = clip
        for number, clip in enumerate(sorted((clips / "test").glob(f"*_id_{machine_id}_*.wav"))):
            word = "OK" if clip.name.startswith("normal") else "NG"
            copied[f"valve/{line}/test/{word}/take {number}.wav"] = clip
    for relative, clip in copied.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / relative)
    return copied


def test_a_folder_tree_of_any_names_is_indexed_with_its_labels_and_what_it_cannot_place(valve_clips, tmp_path):
    copied = plant_tree(valve_clips, tmp_path)
    (tmp_path / "valve" / "line_A" / "test" / "spare.wav").write_bytes(b"")  # no label word: unlabelled test clip
    (tmp_path / "valve" / "line_A" / "test" / "ok_but_ng.wav").write_bytes(b"")
    (tmp_path / "valve" / "notes.wav").write_bytes(b"")
    with pytest.raises(LayoutError, match="notes.wav: not in ROOT/<machine_type>/<machine_id>/train|test/"):
        index_clips(tmp_path)
    index = index_clips(tmp_path, lenient=True)
    assert index.layout == "folders"
    rows = {Path(r["path"]).relative_to(tmp_path).as_posix(): r for r in index.table.to_pylist()}
    assert set(rows) == set(copied) | {"valve/line_A/test/spare.wav"}
    for relative, clip in copied.items():
        row = rows[relative]
        assert (row["machine_type"], row["split"]) == ("valve", relative.split("/")[2])
        assert row["machine_id"] == relative.split("/")[1]
        assert row["label"] == ("anomaly" if clip.name.startswith("anomaly") else "normal")
    assert rows["valve/line_A/test/spare.wav"]["label"] == "unknown"
    reasons = dict(index.skipped)
    assert "says both normal and anomalous" in reasons[str(tmp_path / "valve" / "line_A" / "test" / "ok_but_ng.wav")]
    assert str(tmp_path / "valve" / "notes.wav") in reasons


def test_a_manifest_places_each_clip_and_names_what_it_cannot(valve_clips, tmp_path):
    clips = sorted(valve_clips.glob("*/*.wav"))[:6]
    lines = ["path,machine_type,machine_id,split,label,attributes"]
    lines += [f"{clip.relative_to(valve_clips.parent)},valve,pump-{clip.name[-6:-4]},{clip.parent.name},"
              f"{clip.name.split('_')[0]},speed_1" for clip in clips]
    manifest = valve_clips.parent / "manifest.csv"
    manifest.write_text("\n".join(lines + ["valve/test/gone.wav,valve,x,test,anomaly,"]) + "\n")
    with pytest.raises(LayoutError, match=r"manifest.csv: valve/test/gone.wav: no such file"):
        index_clips(manifest)
    index = index_clips(manifest, lenient=True)
    assert index.layout == "manifest" and len(index) == 6 and len(index.skipped) == 1
    assert [Path(p) for p in index.table["path"].to_pylist()] == clips
    assert set(index.table["attributes"].to_pylist()) == {"speed_1"}
    manifest.write_text("path,machine_type,split\n")
    with pytest.raises(LayoutError, match="lacks the column.s. machine_id, label"):
        index_clips(manifest)
    manifest.write_text("path,machine_type,machine_id,split,label\nvalve/train/x.wav,valve,00,training,normal\n")
    with pytest.raises(LayoutError, match="split 'training' is neither train nor test"):
        index_clips(manifest)


@pytest.mark.slow
@pytest.mark.ray
def test_a_plants_folder_tree_trains_and_scores_end_to_end_under_its_own_names(ray_session, valve_clips, tmp_path,
                                                                               capsys):
    """README's "Your own recordings": `rcmae index` then `rcmae run` on the tree; results carry the plant's names."""
    plant = tmp_path / "plant"
    copied = plant_tree(valve_clips, plant)
    assert main(["index", "--data", str(plant)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{len(copied)} clips, read as a folder tree <machine_type>/<machine_id>/train|test/")
    assert main(["run", "--data", str(plant), "--out", str(tmp_path / "run"), "--no-baseline", "--set",
                 "scale.num_workers=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1"]) == 0
    evaluation = tmp_path / "run" / "evaluation"
    for line in ("line_A", "line_B"):
        scores = read_scores(evaluation / f"anomaly_score_valve_id_{line}.csv")
        assert sorted(scores) == sorted(Path(r).name for r in copied if r.startswith(f"valve/{line}/test/"))
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert {row["machine_id"] for row in metrics["per_id"]} == {"line_A", "line_B"}
    assert all(0 <= row["auc"] <= 1 for row in metrics["per_id"])


@pytest.mark.parametrize("layout", ["folders", "manifest"])
def test_the_toy_factory_writes_a_plants_shapes_and_they_index_as_the_dcase_one(tmp_path, layout):
    dcase = index_clips(synthesize(tmp_path / "dcase", preset="small", types=("valve",))).table
    index = index_clips(synthesize(tmp_path / layout, preset="small", types=("valve",), layout=layout))
    assert index.layout == layout and not index.skipped

    def counts(table):
        return sorted((r["machine_id"][-2:], r["split"], r["label"]) for r in table.to_pylist())

    assert counts(index.table) == counts(dcase)  # unit_00 <-> 00: every clip placed with its machine and label
