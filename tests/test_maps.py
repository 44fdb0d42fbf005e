"""Anomaly maps as a user gets them: patch coordinates in hertz and seconds, fault regions on the patch grid,
`rcmae score --explain` files equal to the Python API's maps, and the masking that faithfulness relies on."""


import numpy as np
import pytest
import torch

from rcmae import Detector
from rcmae.cli import main
from rcmae.config import tiny
from rcmae.evaluate.maps import hz_to_mel, mel_to_hz, patch_bands, patch_times, plot_map, region_mask
from rcmae.models.mae import RCMAE
from rcmae.sections import FeatureConfig


def test_the_slaney_mel_scale_by_hand():
    np.testing.assert_allclose(hz_to_mel([0.0, 500.0, 1000.0, 6400.0]), [0.0, 7.5, 15.0, 42.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([60.0, 999.0, 1001.0, 7900.0])), [60.0, 999.0, 1001.0, 7900.0])


def test_patch_rows_and_columns_in_hertz_and_seconds():
    features = FeatureConfig(n_mels=128, n_frames=64, patch_freq=16, patch_time=8, f_min=50.0, f_max=8000.0)
    lows, highs = patch_bands(features)
    assert lows[0] == pytest.approx(50.0) and highs[-1] == pytest.approx(8000.0)
    assert np.all(np.diff(lows) > 0) and np.all(highs > lows) and np.all(highs[:-1] > lows[1:])  # rows overlap
    starts, ends = patch_times(features, 16000)
    assert starts[1] == pytest.approx(8 * 512 / 16000) and ends[-1] == pytest.approx(64 * 512 / 16000)


def test_a_region_covers_the_patches_it_overlaps():
    features = tiny().features  # 8 x 8 patches of 16 bands x 8 frames (0.256 s)
    lows, highs = patch_bands(features)
    region = {"spans": [[0.3, 0.4]], "band_hz": [float(highs[2]) + 1.0, float(lows[5]) - 1.0]}
    mask = region_mask(region, features, 16000)
    assert mask.sum(axis=1).tolist() == [0, 0, 0, 1, 1, 0, 0, 0] and mask.sum(axis=0).tolist()[1] == 2
    assert not region_mask(region, features, 16000, offset_s=1.0).any()  # a window starting later misses it
    assert not region_mask({"spans": [], "band_hz": None}, features, 16000).any()


def test_a_map_picture_is_written(tmp_path):
    features = tiny().features
    mask = np.zeros(features.grid, dtype=bool)
    mask[0, 7] = True  # on two borders: still outlined
    plot_map(tmp_path / "map.png", np.random.default_rng(0).normal(size=(128, 64)), np.zeros(features.grid),
             features, 16000, "a clip", region=mask)
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_encode_hides_exactly_the_patches_named():
    config = tiny()
    model = RCMAE(model=config.model, features=config.features).eval()
    hidden = torch.zeros(2, model.num_patches, dtype=torch.bool)
    hidden[0, [3, 10, 40]] = True
    hidden[1, [0, 1, 63]] = True
    with torch.no_grad():
        latent, mask, restore = model.encode(torch.randn(2, 128, 64), hidden=hidden)
    assert latent.shape[1] == 1 + model.num_patches - 3
    assert torch.equal(mask.bool(), hidden)


def test_explain_writes_the_apis_maps_per_recording(finetuned_model, toy_root, tmp_path):
    test = toy_root / "dev_data" / "valve" / "test"
    clips = [test / "anomaly_id_00_00000000.wav", test / "normal_id_00_00000000.wav"]
    other = toy_root / "dev_data" / "fan" / "test" / "anomaly_id_00_00000000.wav"  # the same name, another folder
    code = main(["score", "--checkpoint", str(finetuned_model), *map(str, clips), str(other),
                 "--explain", str(tmp_path / "maps"), "--out", str(tmp_path / "scores.csv")])
    decisions = [row.split(",")[-1] for row in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
    assert len(decisions) == 3 and code == (1 if "1" in decisions else 0)  # exit 1: some recording is anomalous
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == sorted(f"{folder}__test__{clip.stem}.{ext}" for folder, clip in
                             [("valve", clips[0]), ("valve", clips[1]), ("fan", other)] for ext in ("npy", "png"))
    detector = Detector.load(finetuned_model)
    result = detector.score_file(clips[0], explain=True)
    saved = np.load(tmp_path / "maps" / f"valve__test__{clips[0].stem}.npy")
    assert saved.shape == (1, *tiny().features.grid) and result.maps.shape == saved.shape
    np.testing.assert_allclose(saved, result.maps, rtol=1e-5, atol=1e-5)
    assert detector.score_file(clips[0]).maps is None


def test_explain_into_a_file_is_one_line(finetuned_model, toy_root, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    clip = toy_root / "dev_data" / "valve" / "test" / "normal_id_00_00000000.wav"
    assert main(["score", "--checkpoint", str(finetuned_model), str(clip), "--explain", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"--explain {tmp_path / 'taken'} is a file: name a folder for the maps")
