"""A weight-free, prompt-driven augmenter: each prompt's noise family maps to a synthesised factory
noise, mixed into the clip at a random SNR. Deterministic by seed. The default when no AudioLDM
model is given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rcmae.augment.base import Augmented
from rcmae.augment.prompts import FAMILIES, PromptOptions, load_prompts, pick
from rcmae.config_input import check, doc_field
from rcmae.data.audio import rms
from rcmae.data.sound_models import band_noise, harmonic_tone, impacts, periodic_times, slow_noise


def saw(n, sr, rng):
    """Screeching bands: narrow high bands whose centre wanders, with cutting-pressure modulation."""
    centre = rng.uniform(2500, 6000) * (1 + 0.05 * slow_noise(n, sr, rng, 1.5))
    screech = harmonic_tone(centre, [1.0, 0.3], sr, rng)
    return screech * (0.6 + 0.4 * np.abs(slow_noise(n, sr, rng, 4.0))) + 0.5 * band_noise(n, sr, rng, 2000, 7500)


def press(n, sr, rng):
    """Buzz pulses: a harmonic buzz gated at the press rate."""
    buzz = harmonic_tone(np.full(n, rng.uniform(90, 300)), [1, 0.7, 0.5, 0.3, 0.2], sr, rng)
    gate = (np.sin(2 * np.pi * rng.uniform(2, 8) * np.arange(n) / sr) > rng.uniform(-0.2, 0.5)).astype(float)
    return buzz * np.convolve(gate, np.hanning(200) / 100, mode="same")


def crusher(n, sr, rng):
    """Rumble and impacts: low-frequency noise with random heavy knocks."""
    count = max(1, int(n / sr * rng.uniform(2, 8)))
    knocks = impacts(rng.uniform(0, n / sr, count), n, sr, rng.uniform(60, 250), 0.06, rng.uniform(0.5, 1, count))
    return band_noise(n, sr, rng, 20, 400, tilt=-3) + 2.0 * knocks / rms(knocks)


def moulding(n, sr, rng):
    """Clicks: a regular click train at the cycle rate."""
    times = periodic_times(n, sr, 1.0 / rng.uniform(3, 10), rng, 0.03)
    return impacts(times, n, sr, rng.uniform(2000, 6000), 0.002)


def woodworking(n, sr, rng):
    """Whirr: a motor tone with slow load changes plus cutting noise."""
    speed = rng.uniform(150, 600) * (1 + 0.1 * slow_noise(n, sr, rng, 0.7))
    return harmonic_tone(speed, [1, 0.6, 0.4, 0.2], sr, rng) + 0.6 * band_noise(n, sr, rng, 1000, 4000)


def pneumatic(n, sr, rng):
    """Hiss: broadband high noise in bursts, over a compressor hum."""
    envelope = np.clip(slow_noise(n, sr, rng, 3.0) + 0.5, 0, None)
    hum = harmonic_tone(np.full(n, rng.uniform(40, 120)), [1, 0.5], sr, rng)
    return band_noise(n, sr, rng, 2000, 7900) * envelope + 0.3 * hum


NOISES = {"saw": saw, "press": press, "crusher": crusher, "moulding": moulding, "woodworking": woodworking,
          "pneumatic": pneumatic}
assert set(NOISES) == set(FAMILIES)


@dataclass
class FactoryMixOptions(PromptOptions):
    snr_db_min: float = doc_field("Lowest clip-to-noise SNR (dB).", 0.0)
    snr_db_max: float = doc_field("Highest clip-to-noise SNR (dB).", 15.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.snr_db_min <= self.snr_db_max, "augment: snr_db_min must be <= snr_db_max")


class FactoryMix:
    name = "factory-mix"
    domain = "wave"

    def __init__(self, options: FactoryMixOptions, sample_rate: int = 16000, device: str = "cpu"):
        self.options, self.sample_rate = options, sample_rate
        self.prompts = load_prompts(options.prompts)

    def augment(self, items: list[np.ndarray], seeds: list[int]) -> list[Augmented]:
        results = []
        for wave, seed in zip(items, seeds):
            rng = np.random.default_rng(seed)
            prompt = pick(self.prompts, rng)
            family = prompt.family if prompt.family in NOISES else str(rng.choice(FAMILIES))
            noise = NOISES[family](len(wave), self.sample_rate, rng)
            snr_db = float(rng.uniform(self.options.snr_db_min, self.options.snr_db_max))
            mixed = wave + noise / rms(noise) * rms(wave) / 10 ** (snr_db / 20)
            peak = float(np.max(np.abs(mixed)))
            mixed = mixed / peak * min(peak, 0.99)  # keep the loudness; only a clipping mix is scaled down
            results.append(Augmented(mixed.astype(np.float32), dict(
                augmenter=self.name, seed=seed, prompt=prompt.text, family=family, snr_db=round(snr_db, 3))))
        return results
