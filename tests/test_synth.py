import json

import numpy as np
import pytest
import soundfile as sf

from rcmae.config import ConfigError
from rcmae.data.layout import index_clips
from rcmae.data.synth import PRESETS, synthesize


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
    mean = summarize(per_id)["mean"]
    assert 0.6 <= mean["auc"] <= 0.9, mean


def test_clip_length_can_be_chosen(tmp_path):
    synthesize(tmp_path, preset="small", types=("valve",), clip_seconds=10.0)
    clip = next((tmp_path / "dev_data" / "valve" / "train").glob("*.wav"))
    assert sf.info(clip).duration == 10.0
    with pytest.raises(ConfigError, match="between 0.5 and 60"):
        synthesize(tmp_path / "bad", clip_seconds=0.1)
