import json

import numpy as np
import pytest
import soundfile as sf

from rcmae.config import ConfigError
from rcmae.data.audio import rms
from rcmae.data.layout import index_clips
from rcmae.data.sound_models import FAULT_KINDS, MACHINES, TIMING_RICH_FAULTS
from rcmae.data.synth import PRESETS, ToyData, id_params, synthesize, toy_data


def test_layout_counts_and_format(toy_root):
    index = index_clips(toy_root)
    rows = index.table.to_pylist()
    spec = PRESETS["small"]
    assert {r["machine_type"] for r in rows} == {"fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor"}
    assert all(r["label"] == "normal" for r in rows if r["split"] == "train")
    fan_00 = [r for r in rows if r["machine_type"] == "fan" and r["machine_id"] == "00"]
    assert sum(r["split"] == "train" for r in fan_00) == spec.train_per_id
    assert sum(r["label"] == "anomaly" for r in fan_00) == spec.test_anomaly_per_id
    info = sf.info(rows[0]["path"])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == int(spec.clip_seconds * 16000)


def test_manifest_records_ids_and_every_anomaly(toy_root):
    manifest = json.loads((toy_root / "manifest.json").read_text())
    assert set(manifest["machines"]["fan"]) == {"00", "02", "04"}
    assert manifest["machines"]["fan"]["00"] != manifest["machines"]["fan"]["02"]
    anomalies = {k: v for k, v in manifest["clips"].items() if "/anomaly_" in k}
    assert anomalies and all("family" in v and 0 <= v["severity"] <= 1 for v in anomalies.values())
    assert len(manifest["clips"]) == len(index_clips(toy_root))


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    a = synthesize(tmp_path / "a", "small", seed=7, types=("valve",))
    b = synthesize(tmp_path / "b", "small", seed=7, types=("valve",))
    c = synthesize(tmp_path / "c", "small", seed=8, types=("valve",))
    name = "valve/test/anomaly_id_02_00000003.wav"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    assert not np.allclose(sf.read(a / name)[0], sf.read(c / name)[0])


def test_difficulty_is_calibrated(toy_root, tiny_config):
    """The floor (a per-ID Gaussian on each clip's log-mel mean and deviation) must detect anomalies, but not
    perfectly: a data set it solves would teach nothing about RC-MAE."""
    from rcmae.data.audio import load_clip
    from rcmae.detect.floor import fit_floor, floor_scores
    from rcmae.evaluate.metrics import id_metrics, summarize
    from rcmae.features import LogMel, compute_logmel

    extractor = LogMel(tiny_config.features, tiny_config.audio.sample_rate)

    def specs(rows):
        waves = np.stack([load_clip(r["path"], tiny_config.audio) for r in rows])
        return compute_logmel(waves, tiny_config.features, tiny_config.audio.sample_rate, extractor=extractor)

    rows = index_clips(toy_root).table.to_pylist()
    per_id = []
    for key in sorted({(r["machine_type"], r["machine_id"]) for r in rows}):
        clips = [r for r in rows if (r["machine_type"], r["machine_id"]) == key]
        train, test = [r for r in clips if r["split"] == "train"], [r for r in clips if r["split"] == "test"]
        gaussians = fit_floor(specs(train), ["k"] * len(train))
        scores = floor_scores(gaussians, specs(test), ["k"] * len(test))
        labels = np.array([r["label"] == "anomaly" for r in test], dtype=int)
        per_id.append(dict(machine_type=key[0], machine_id=key[1], **id_metrics(labels, scores)))
    mean = summarize(per_id).mean
    assert 0.6 <= mean["auc"] <= 0.9, mean


def test_clip_length_can_be_chosen(tmp_path):
    synthesize(tmp_path, preset="small", types=("valve",), clip_seconds=10.0)
    clip = next((tmp_path / "dev_data" / "valve" / "train").glob("*.wav"))
    assert sf.info(clip).duration == 10.0
    with pytest.raises(ConfigError, match="between 0.5 and 60"):
        synthesize(tmp_path / "bad", clip_seconds=0.1)


def test_a_smaller_train_set_is_the_start_of_a_larger_one(tmp_path):
    synthesize(tmp_path / "few", preset="small", types=("valve",), train_per_id=4)
    synthesize(tmp_path / "more", preset="small", types=("valve",), train_per_id=6)
    few, more = (sorted((tmp_path / n / "dev_data" / "valve").rglob("*.wav")) for n in ("few", "more"))
    assert len(more) - len(few) == 2 * 3  # two more train clips for each of the three IDs, the same test clips
    for clip in few:
        assert clip.read_bytes() == (tmp_path / "more" / clip.relative_to(tmp_path / "few")).read_bytes()
    with pytest.raises(ConfigError, match="train clips per ID must be between 3 and 5000"):
        synthesize(tmp_path / "bad", train_per_id=2)


# the small preset's files as they were before fault regions and the hard preset existed (seed 0)
GOLDEN_MD5 = {"fan/test/anomaly_id_00_00000003.wav": "b8b831fa7bd4759df948feb6365de274",
              "valve/train/normal_id_02_00000007.wav": "2398e51ebca2137e83f79175c655260f",
              "ToyCar/test/anomaly_id_04_00000011.wav": "552bd05b23efa8fe52596d9a083ad8a7"}


def test_the_small_presets_clips_keep_their_bytes(toy_root):
    import hashlib

    for name, md5 in GOLDEN_MD5.items():
        assert hashlib.md5((toy_root / "dev_data" / name).read_bytes()).hexdigest() == md5, name


def test_every_anomaly_records_where_and_in_which_band_its_fault_sounds(toy_root):
    manifest = json.loads((toy_root / "manifest.json").read_text())
    anomalies = {k: v for k, v in manifest["clips"].items() if "family" in v}
    for name, record in anomalies.items():
        spans, band = record["region"]["spans"], record["region"]["band_hz"]
        assert all(0 <= start < end <= 2.0 for start, end in spans), name
        assert band is None and not spans or 0 <= band[0] <= band[1] <= 8000, name
    # continuous faults sound over the whole clip (a belt's bearing pulses with the belt), clicks only at strokes
    whole = [r["region"]["spans"] for name, r in anomalies.items()
             if r["family"] == "bearing_damage" and "ToyConveyor" not in name]
    assert all(spans == [[0.0, 1.984]] for spans in whole)
    clicks = [r["region"]["spans"] for r in anomalies.values() if r["family"] == "extra_clicks"]
    assert all(sum(end - start for start, end in spans) < 1.0 for spans in clicks)


def test_fault_region_finds_a_burst_in_time_and_frequency():
    from rcmae.data.synth import fault_region

    sr, n = 16000, 32000
    part = np.zeros(n)
    t = np.arange(4000) / sr
    part[8000:12000] = np.sin(2 * np.pi * 1000 * t)  # 0.5-0.75 s, 1 kHz
    region = fault_region(part, sr)
    assert region["spans"] == [[0.48, 0.768]]  # the frames of 512 samples that hold the burst
    assert 950 <= region["band_hz"][0] <= region["band_hz"][1] <= 1050
    assert fault_region(np.zeros(n), sr) == {"spans": [], "band_hz": None}


def test_the_hard_preset_makes_faults_brief_over_impulsive_background(tmp_path):
    synthesize(tmp_path, preset="hard", seed=0, types=("pump",))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    anomalies = [v for v in manifest["clips"].values() if "family" in v]
    extents = [r["region"]["spans"][-1][1] - r["region"]["spans"][0][0] for r in anomalies if r["region"]["spans"]]
    assert len(extents) >= 30 and max(extents) <= 2.1 and min(extents) < 1.0  # 0.2-2 s windows
    assert sf.info(next((tmp_path / "dev_data" / "pump" / "train").glob("*.wav"))).duration == 4.0


@pytest.mark.parametrize("machine_type,family", [(t, f) for t, families in TIMING_RICH_FAULTS.items()
                                                 for f in families])
def test_a_timing_rich_fault_changes_when_the_machine_sounds_not_how_loud(machine_type, family):
    params = id_params(0, machine_type, 0)
    render, n, sr = MACHINES[machine_type]["render"], 32000, 16000
    changed = 0
    for seed in range(5):  # a few clips: a random fault may, rarely, move nothing within 2 s (a valve's strokes)
        normal = render(params, n, sr, np.random.default_rng(seed), None)
        faulty = render(params, n, sr, np.random.default_rng(seed), (family, 0.7))
        assert np.isfinite(faulty).all() and 0.6 < rms(faulty) / rms(normal) < 1.6
        changed += np.abs(faulty - normal).max() > 0.05 * np.abs(normal).max()
    assert changed >= 4 and FAULT_KINDS[family] == "timing"


def test_only_the_hard_preset_draws_the_timing_rich_faults(tmp_path):
    synthesize(tmp_path / "hard", preset="hard", seed=0, types=("valve",))
    clips = json.loads((tmp_path / "hard" / "manifest.json").read_text())["clips"]
    families = {record.get("family") for record in clips.values()}
    assert "displaced_strokes" in families
    assert "displaced_strokes" not in MACHINES["valve"]["faults"]  # the small and full presets draw these only


def test_a_run_keeps_its_toy_data_and_refuses_toy_data_made_otherwise(tmp_path):
    folder = toy_data(tmp_path / "data", ToyData(types=("valve",)))
    clips = sorted(folder.rglob("*.wav"))
    assert clips and {path.parts[-3] for path in clips} == {"valve"}
    stamp = clips[0].stat().st_mtime_ns
    assert toy_data(folder, ToyData(types=("valve",))) == folder and clips[0].stat().st_mtime_ns == stamp  # kept
    with pytest.raises(ConfigError, match=r"made as small, seed 0, valve; this run asks for small, seed 0, fan: "
                                          r"give another --out, or --force"):
        toy_data(folder, ToyData(types=("fan",)))
    toy_data(folder, ToyData(types=("fan",)), force=True)
    assert {path.parts[-3] for path in folder.rglob("*.wav")} == {"fan"}
