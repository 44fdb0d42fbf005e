import numpy as np
import pytest
import torch

from rcmae.features import LOG_FLOOR, Normalizer, compute_logmel, fix_frames, patchify, unpatchify
from rcmae.sections import FeatureConfig


# ---- an independent log-mel: numpy STFT + a Slaney mel filterbank written from its formulas
def hz_to_mel(f):
    f = np.asarray(f, float)
    return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / np.log(6.4))


def mel_to_hz(m):
    m = np.asarray(m, float)
    return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))


def numpy_logmel(wave, sr, n_fft, hop, n_mels, fmin, fmax):
    padded = np.pad(wave, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (len(padded) - n_fft) // hop
    stft = np.stack([np.fft.rfft(padded[i * hop:i * hop + n_fft] * window) for i in range(frames)], axis=1)
    power = np.abs(stft) ** 2
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bank = np.zeros((n_mels, len(fft_hz)))
    for i in range(n_mels):
        lo, mid, hi = edges[i:i + 3]
        rising = (fft_hz - lo) / (mid - lo)
        falling = (hi - fft_hz) / (hi - mid)
        bank[i] = np.maximum(0, np.minimum(rising, falling)) * 2.0 / (hi - lo)
    return 10 * np.log10(bank @ power + LOG_FLOOR), edges


def test_logmel_matches_independent_numpy_computation():
    config = FeatureConfig(n_frames=32, patch_time=8)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ours = compute_logmel(wave[None], config)[0]
    reference, _ = numpy_logmel(wave.astype(float), 16000, 1024, 512, 128, 50.0, 8000.0)
    assert reference.shape == (128, 32)  # 1 s at hop 512, centred: 32 frames
    np.testing.assert_allclose(ours, reference, atol=0.05)


def test_sine_energy_lands_in_its_mel_band():
    config = FeatureConfig(n_frames=32, patch_time=8)
    t = np.arange(16000) / 16000
    for freq in (300.0, 1000.0, 4000.0):
        spec = compute_logmel(np.sin(2 * np.pi * freq * t)[None], config)[0]
        band = int(np.argmax(spec[:, 5:-5].mean(axis=1)))
        _, edges = numpy_logmel(np.zeros(2048), 16000, 1024, 512, 128, 50.0, 8000.0)
        assert edges[band] <= freq <= edges[band + 2], (freq, band)


def test_batched_logmel_equals_one_by_one():
    config = FeatureConfig(n_frames=32, patch_time=8)
    waves = np.random.default_rng(1).standard_normal((3, 16000)).astype(np.float32)
    batched = compute_logmel(waves, config)
    for i in range(3):
        np.testing.assert_allclose(batched[i], compute_logmel(waves[i:i + 1], config)[0], atol=1e-4)


def test_ten_second_clip_pads_313_frames_to_320():
    spec = compute_logmel(np.random.default_rng(2).standard_normal((1, 160000)), FeatureConfig())
    assert spec.shape == (1, 128, 320)
    assert np.all(spec[0, :, 313:] == spec[0, :, :313].min())


def test_fix_frames_crops_long_spectrograms():
    spec = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10)
    assert torch.equal(fix_frames(spec, 4), spec[..., :4])


def test_patchify_round_trip_and_patch_order():
    config = FeatureConfig()
    specs = torch.randn(2, 128, 320)
    patches = patchify(specs, config.patch_freq, config.patch_time)
    assert patches.shape == (2, 512, 80)
    assert torch.equal(patches[0, 0], specs[0, :8, :10].reshape(-1))
    assert torch.equal(patches[0, 1], specs[0, :8, 10:20].reshape(-1))   # next patch in time
    assert torch.equal(patches[0, 32], specs[0, 8:16, :10].reshape(-1))  # next row in frequency
    assert torch.equal(unpatchify(patches, config.grid, 8, 10), specs)


def test_patchify_rejects_partial_patches():
    with pytest.raises(ValueError, match="whole number"):
        patchify(torch.zeros(1, 128, 313), 8, 10)


def test_normalizer_fits_train_statistics_and_round_trips(tmp_path):
    specs = np.random.default_rng(3).normal(5.0, 2.0, (20, 4, 50)).astype(np.float32)
    norm = Normalizer.fit(specs)
    normalised = norm(specs)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=(0, 2)), 1, atol=1e-3)
    norm.save(tmp_path / "norm.json")
    again = Normalizer.load(tmp_path / "norm.json")
    np.testing.assert_array_equal(again.mean, norm.mean)
    torch.testing.assert_close(again(torch.from_numpy(specs)), torch.from_numpy(normalised))
