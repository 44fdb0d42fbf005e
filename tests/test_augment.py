import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rcmae.augment.audioldm import (
    AudioLDMAugmenter,
    AudioLDMOptions,
    WeightsUnavailable,
    audioldm_normalized,
    ddim_start,
    load_components,
)
from rcmae.augment.base import clip_seed
from rcmae.augment.factory_mix import FactoryMix, FactoryMixOptions
from rcmae.augment.prompts import EXTENDED, FAMILIES, TABLE_1, load_prompts
from rcmae.augment.specaugment import MaskOptions, SpecAugment
from rcmae.config import ConfigError
from rcmae.data.audio import rms


@pytest.fixture(scope="module")
def augmenter(tiny_audioldm):
    config = AudioLDMOptions(model=str(tiny_audioldm), steps_min=2, steps_max=3, t0=0.5)
    return AudioLDMAugmenter(config, device="cpu")


def clip(seconds=1.0, seed=0):
    t = np.arange(int(16000 * seconds)) / 16000
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)


def test_prompts_hold_table_1_verbatim_and_more():
    assert len(TABLE_1) == 6 and len(EXTENDED) >= 36
    assert TABLE_1[0].text.startswith("add sharp and metallic screeching sound created by metal-cutting saws")
    assert {p.family for p in EXTENDED} == set(FAMILIES)
    assert len({p.text for p in EXTENDED}) == len(EXTENDED)


def test_prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# mine\nsaw: add a saw\nadd a forklift horn\n\n")
    expected = [("saw", "add a saw"), ("custom", "add a forklift horn")]
    assert [(p.family, p.text) for p in load_prompts(str(path))] == expected
    assert load_prompts("paper") == TABLE_1 and load_prompts("extended") == EXTENDED
    with pytest.raises(ConfigError, match="nope.txt: prompt file not found"):
        load_prompts(str(tmp_path / "nope.txt"))


def test_noised_latent_follows_eq1_at_the_right_timestep(augmenter):
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 32), torch.randn(2, 4, 8, 32)
    steps = 20
    latents, remaining = augmenter.noised_start(x0, eps, steps)
    k = math.floor(steps * 0.5)
    assert len(remaining) == k
    scheduler = augmenter.parts.scheduler
    t = int(scheduler.timesteps[steps - k])
    assert int(remaining[0]) == t
    abar = scheduler.alphas_cumprod[t]
    torch.testing.assert_close(latents, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)


def test_ddim_start_is_floor_of_s_t0_and_at_least_one():
    assert ddim_start(37, 0.5) == 18 and ddim_start(10, 0.05) == 1 and ddim_start(10, 1.0) == 10


def test_steps_always_in_paper_range():
    options = AudioLDMOptions()
    plans = AudioLDMAugmenter._plan(type("A", (), {"options": options, "prompts": EXTENDED})(),
                                    [clip_seed(0, f"clip{i}", 0) for i in range(500)])
    steps = [p.steps for p in plans]
    assert min(steps) >= 10 and max(steps) <= 50 and len(set(steps)) > 20


def test_tiny_model_keeps_length_and_gives_finite_audio(augmenter):
    waves = [clip(1.0), clip(1.7, seed=1)]
    results = augmenter.augment(waves, [11, 12])
    for wave, result in zip(waves, results):
        assert result.data.shape == wave.shape and np.all(np.isfinite(result.data))
        assert rms(result.data) == pytest.approx(rms(wave), rel=1e-3)
        assert set(result.provenance) >= {"prompt", "steps", "seed", "t0", "guidance_scale", "model"}


def test_same_seed_same_audio_other_seed_other_audio(augmenter):
    wave = clip(1.0)
    first = augmenter.augment([wave], [5])[0].data
    again = augmenter.augment([wave], [5])[0].data
    other = augmenter.augment([wave], [6])[0].data
    np.testing.assert_allclose(first, again, atol=1e-5)
    assert not np.allclose(first, other, atol=1e-3)


def test_a_clips_audio_does_not_depend_on_its_batch(augmenter):
    wave, neighbour = clip(1.0), clip(1.0, seed=3)
    alone = augmenter.augment([wave], [5])[0]
    batched = augmenter.augment([neighbour, wave], [3, 5])
    assert batched[0].provenance["steps"] == batched[1].provenance["steps"]  # one UNet batch
    np.testing.assert_allclose(alone.data, batched[1].data, atol=1e-4)


def test_long_clip_is_windowed_and_restored(augmenter):
    wave = np.tile(clip(1.0), 11)  # 11 s: two AudioLDM windows
    windows, length = augmenter.windows(wave)
    assert len(windows) == 2 and length == len(wave)
    assert augmenter.augment([wave], [3])[0].data.shape == wave.shape


def test_loader_errors_name_the_source(tmp_path):
    with pytest.raises(WeightsUnavailable, match="cannot load AudioLDM"):
        load_components(str(tmp_path / "missing"))


def test_factory_mix_is_deterministic_and_hits_its_snr():
    config = FactoryMixOptions(snr_db_min=5.0, snr_db_max=5.0)
    mix = FactoryMix(config)
    wave = clip(2.0)
    a, b = mix.augment([wave], [1])[0], mix.augment([wave], [1])[0]
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, mix.augment([wave], [2])[0].data)
    assert a.provenance["family"] in FAMILIES and a.provenance["snr_db"] == 5.0
    noise = a.data - wave
    assert 20 * np.log10(rms(wave) / rms(noise)) == pytest.approx(5.0, abs=0.1)


def test_specaugment_masks_bands_and_stretches_in_bounds_with_the_clip_mean_and_nothing_else():
    spec = np.random.default_rng(0).normal(size=(128, 64)).astype(np.float32)
    result = SpecAugment(MaskOptions(time_masks=2, freq_masks=2, max_mask_fraction=0.15)).augment([spec], [4])[0]
    hidden = np.zeros(spec.shape, dtype=bool)
    for axis, size in (("freq_masks", 128), ("time_masks", 64)):
        spans = result.provenance[axis]
        assert len(spans) == 2
        for start, width in spans:
            assert 1 <= width <= int(size * 0.15) and 0 <= start and start + width <= size
            if axis == "freq_masks":
                hidden[start:start + width, :] = True
            else:
                hidden[:, start:start + width] = True
    np.testing.assert_allclose(result.data[hidden], spec.mean(), rtol=1e-5)
    np.testing.assert_array_equal(result.data[~hidden], spec[~hidden])


def test_input_is_normalised_as_audioldm_does_and_loudness_restored(augmenter):
    wave = clip(1.0) + 0.2
    normalised = audioldm_normalized(wave)
    assert abs(normalised.mean()) < 1e-6 and np.abs(normalised).max() == pytest.approx(0.5)
    loud = augmenter.augment([wave], [7])[0].data
    quiet = augmenter.augment([wave / 1000], [7])[0].data  # a quiet machine reaches the VAE at the same level
    np.testing.assert_allclose(quiet * 1000, loud, rtol=1e-3, atol=1e-4)


def test_eta_draws_seeded_noise_per_clip(tiny_audioldm):
    config = AudioLDMOptions(model=str(tiny_audioldm), steps_min=6, steps_max=6, eta=1.0)
    stochastic = AudioLDMAugmenter(config, device="cpu")
    first, again = (stochastic.augment([clip(1.0)], [5])[0] for _ in range(2))
    np.testing.assert_allclose(first.data, again.data, atol=1e-5)
    assert first.provenance["eta"] == 1.0
    deterministic = AudioLDMAugmenter(dataclasses.replace(config, eta=0.0), device="cpu")
    assert not np.allclose(first.data, deterministic.augment([clip(1.0)], [5])[0].data, atol=1e-4)


def test_non_finite_generated_audio_is_an_error_row_not_a_feature(augmenter, monkeypatch):
    from rcmae.augment.featurize import Augmentation, Featurizer
    from rcmae.config import tiny

    monkeypatch.setattr(augmenter, "decode", lambda latents: torch.full((len(latents), 16000), float("nan")))
    results = augmenter.augment([clip(1.0)], [1])
    assert isinstance(results[0], FloatingPointError)
    rows = pd.DataFrame([dict(path="/x/normal_id_00_00000000.wav", file_name="normal_id_00_00000000.wav",
                              machine_type="fan", machine_id="00", split="train", label="normal", domain="source",
                              attributes="", wave=clip(2.0), error=None)])
    config = tiny()
    table = Featurizer(config.features, config.audio.sample_rate, Augmentation(augmenter, 2, 0))(rows)
    assert "non-finite" in table["error"][0].as_py() and table["features"][0].as_py() is None


@pytest.mark.slow
def test_the_full_size_random_audioldm_has_the_published_sizes_and_runs_rcmae_s_sdedit():
    """audioldm-s-full-v2's architecture (diffusers' docs: 421 M parameters), built without the hub."""
    from rcmae.augment.tiny import build_components

    parts = build_components(0, size="full")
    counts = {name: sum(p.numel() for p in getattr(parts, name).parameters())
              for name in ("unet", "vae", "text_encoder", "vocoder")}
    assert counts == {"unet": 185_036_552, "vae": 55_376_873, "text_encoder": 125_302_016, "vocoder": 55_264_897}
    assert sum(counts.values()) == pytest.approx(421e6, rel=0.005)
    for module in (parts.vae, parts.text_encoder, parts.unet, parts.vocoder):
        module.eval().requires_grad_(False)
    options = AudioLDMOptions(prompts="paper", steps_min=2, steps_max=2, eta=1.0)
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    [result] = AudioLDMAugmenter(options, 16000, "cpu", components=parts).augment([wave], [7])
    assert result.data.shape == wave.shape and np.isfinite(result.data).all()
    assert result.provenance["steps"] == 2
    del parts
