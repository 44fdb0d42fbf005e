"""Physically motivated sound models of the six DCASE 2020 machine types, and their faults.

Each machine type has `sample_params(rng)` (what tells one machine ID from another) and
`render(params, n, sr, rng, fault)` where `fault` is None or (family, severity in [0, 1]).
All building blocks are plain numpy; every random draw comes from the `rng` passed in.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.signal import fftconvolve

from rcmae.data.audio import rms

Fault = tuple[str, float] | None


# ---------------------------------------------------------------- building blocks
def slow_noise(n: int, sr: int, rng: np.random.Generator, rate_hz: float) -> np.ndarray:
    """Smooth zero-mean unit-ish noise varying at about `rate_hz` (speed jitter, drifts)."""
    knots = max(2, int(n / sr * rate_hz) + 2)
    values = rng.standard_normal(knots)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), values)


def band_noise(n: int, sr: int, rng: np.random.Generator, low: float, high: float, tilt: float = 0.0) -> np.ndarray:
    """Gaussian noise band-limited to [low, high] Hz with a spectral tilt (dB/octave-ish), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    gain = ((freqs >= low) & (freqs <= high)).astype(float)
    gain *= np.power(np.maximum(freqs, 1.0) / max(low, 1.0), tilt / 6.0)
    wave = np.fft.irfft(spectrum * gain, n)
    return wave / (np.sqrt(np.mean(wave ** 2)) + 1e-12)


def harmonic_tone(freq: np.ndarray, amps: list[float], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics k*freq(t) with amplitudes `amps`, following an instantaneous frequency."""
    phase = 2 * np.pi * np.cumsum(freq) / sr
    wave = np.zeros_like(freq)
    for k, amp in enumerate(amps, start=1):
        if np.max(freq) * k < sr / 2:
            wave += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return wave


def impacts(times: np.ndarray, n: int, sr: int, resonance_hz: float, decay_s: float,
            amps: np.ndarray | float = 1.0) -> np.ndarray:
    """Decaying sinusoid bursts (a struck resonance) starting at `times` seconds."""
    length = min(n, int(decay_s * 6 * sr))
    t = np.arange(length) / sr
    kernel = np.sin(2 * np.pi * resonance_hz * t) * np.exp(-t / decay_s)
    train = np.zeros(n)
    idx = (np.asarray(times) * sr).astype(int)
    keep = (idx >= 0) & (idx < n)
    np.add.at(train, idx[keep], np.broadcast_to(amps, idx.shape)[keep])
    return fftconvolve(train, kernel)[:n]


def periodic_times(n: int, sr: int, period_s: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    start = rng.uniform(0, period_s)
    times = np.arange(start, n / sr, period_s)
    return times + rng.normal(0, jitter * period_s, times.shape)


def _scaled(part: np.ndarray, reference: np.ndarray, level: float) -> np.ndarray:
    """`part` rescaled to `level` times the RMS of `reference`."""
    return part / rms(part) * rms(reference) * level


# ---------------------------------------------------------------- rotating machines
def rotating_params(rng: np.random.Generator, f0: tuple[float, float], blades: tuple[int, int],
                    flow: tuple[float, float]) -> dict:
    return dict(
        f0=float(rng.uniform(*f0)),
        blades=int(rng.integers(blades[0], blades[1] + 1)),
        harmonics=[float(a) for a in rng.uniform(0.2, 1.0, 6) / np.arange(1, 7)],
        blade_harmonics=[float(a) for a in rng.uniform(0.3, 1.0, 4)],
        flow_band=[float(rng.uniform(80, 300)), float(rng.uniform(2500, 7000))],
        flow_tilt=float(rng.uniform(-6, -1)),
        flow_level=float(rng.uniform(*flow)),
        bearing_hz=float(rng.uniform(1200, 4000)),
        jitter=float(rng.uniform(0.002, 0.01)),
    )


def speed_drift(n: int, severity: float) -> np.ndarray:
    """A speed factor that ramps steadily through the clip, by up to +-12 % at full severity (a slipping belt,
    a failing drive). Deterministic, so the clip's random draws stay those of its normal rendering."""
    return 1.0 + 0.12 * severity * np.linspace(-1.0, 1.0, n)


def render_rotating(p: dict, n: int, sr: int, rng: np.random.Generator, fault: Fault) -> np.ndarray:
    speed = p["f0"] * (1 + p["jitter"] * slow_noise(n, sr, rng, 2.0)) * rng.uniform(0.98, 1.02)
    if fault is not None and fault[0] == "speed_drift":
        speed = speed * speed_drift(n, fault[1])
    hum = harmonic_tone(speed, p["harmonics"], sr, rng)
    blade = harmonic_tone(speed * p["blades"], p["blade_harmonics"], sr, rng)
    flow = band_noise(n, sr, rng, *p["flow_band"], tilt=p["flow_tilt"])
    flow *= 1 + 0.2 * np.sin(2 * np.pi * np.cumsum(speed * p["blades"]) / sr)
    bearing = 0.05 * np.sin(2 * np.pi * p["bearing_hz"] * np.arange(n) / sr)
    wave = hum + 0.7 * blade + p["flow_level"] * flow * rms(hum) + bearing * rms(hum)
    if fault is None:
        return wave
    family, severity = fault
    if family == "speed_drift":
        return wave
    return wave + ROTATING_FAULTS[family](wave, speed, p, n, sr, rng, severity)


def _load_modulation(wave, speed, p, n, sr, rng, severity):
    """The load pulsing a few times a second (a surging process, a loose coupling): slow amplitude modulation."""
    rate_hz = rng.uniform(2.0, 8.0)
    return 0.6 * severity * np.sin(2 * np.pi * rate_hz * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)) * wave


def _imbalance(wave, speed, p, n, sr, rng, severity):
    once = np.sin(2 * np.pi * np.cumsum(speed) / sr)
    return 0.65 * severity * once * wave + _scaled(once, wave, 0.3 * severity)


def _bearing_damage(wave, speed, p, n, sr, rng, severity):
    defect_hz = float(np.mean(speed)) * rng.uniform(3.1, 5.4)
    times = periodic_times(n, sr, 1.0 / defect_hz, rng, 0.02)
    clicks = impacts(times, n, sr, p["bearing_hz"] * rng.uniform(0.8, 1.3), 0.002)
    return _scaled(clicks, wave, 0.6 * severity)


def _rubbing(wave, speed, p, n, sr, rng, severity):
    envelope = np.clip(np.sin(2 * np.pi * np.cumsum(speed) / sr), 0, None) ** 4
    scrape = band_noise(n, sr, rng, 1500, 6500) * envelope
    return _scaled(scrape, wave, 0.55 * severity)


def _clogging(wave, speed, p, n, sr, rng, severity):
    surge = np.sin(2 * np.pi * np.cumsum(speed * p["blades"] / 2) / sr)
    return -0.3 * severity * wave + _scaled(surge * band_noise(n, sr, rng, 60, 600), wave, 0.65 * severity)


def _cavitation(wave, speed, p, n, sr, rng, severity):
    count = int(n / sr * rng.uniform(20, 60))
    times = rng.uniform(0, n / sr, count)
    crackle = impacts(times, n, sr, rng.uniform(3000, 6500), 0.0008, rng.uniform(0.3, 1.0, count))
    return _scaled(crackle + 0.3 * band_noise(n, sr, rng, 3000, 7800), wave, 0.6 * severity)


ROTATING_FAULTS: dict[str, Callable] = {
    "imbalance": _imbalance, "bearing_damage": _bearing_damage, "rubbing": _rubbing,
    "clogging": _clogging, "cavitation": _cavitation, "load_modulation": _load_modulation,
}


def rattle(wave, n, sr, rng, per_second, resonance_hz, decay_s, level):
    """Loose parts: randomly timed small knocks of one resonance, at `level` x the machine's RMS."""
    count = int(n / sr * rng.uniform(*per_second))
    knocks = impacts(rng.uniform(0, n / sr, count), n, sr, rng.uniform(*resonance_hz), decay_s)
    return _scaled(knocks, wave, level)


# ---------------------------------------------------------------- slider (linear slide rail)
def slider_params(rng: np.random.Generator) -> dict:
    return dict(
        period_s=float(rng.uniform(0.35, 0.9)),
        motion_band=[float(rng.uniform(200, 800)), float(rng.uniform(2000, 6000))],
        impact_hz=float(rng.uniform(400, 2500)),
        impact_decay_s=float(rng.uniform(0.01, 0.04)),
        motor_hz=float(rng.uniform(80, 250)),
    )


def render_slider(p: dict, n: int, sr: int, rng: np.random.Generator, fault: Fault) -> np.ndarray:
    period = p["period_s"] * rng.uniform(0.97, 1.03)
    progress = np.arange(n) / sr / period
    if fault is not None and fault[0] == "stutter":  # the slide catching and lurching: its speed wobbles by up to
        wobble = 0.4 * fault[1]                      # 40 %, 2.5 times a stroke
        progress = progress + wobble / (2 * np.pi * 2.5) * np.sin(2 * np.pi * 2.5 * progress)
    phase = (progress + rng.uniform()) % 1.0
    envelope = np.sin(np.pi * np.clip(phase / 0.8, 0, 1)) ** 2
    motion = band_noise(n, sr, rng, *p["motion_band"]) * envelope
    motor = harmonic_tone(np.full(n, p["motor_hz"]), [1, 0.5, 0.3], sr, rng) * envelope
    ends = np.flatnonzero(np.diff(np.clip(phase / 0.8, 0, 1) >= 1, prepend=0) == 1) / sr
    knocks = impacts(ends, n, sr, p["impact_hz"], p["impact_decay_s"], rng.uniform(0.8, 1.2, len(ends)))
    wave = motion + 0.4 * motor + 2.0 * _scaled(knocks, motion, 1.0)
    if fault is None:
        return wave
    family, severity = fault
    if family == "rattle":
        return wave + rattle(wave, n, sr, rng, (4, 12), (1500, 4000), 0.005, 0.75 * severity)
    if family == "rubbing":
        squeal = harmonic_tone(np.full(n, rng.uniform(1800, 4500)), [1, 0.3], sr, rng) * envelope
        return wave + _scaled(squeal, wave, 0.43 * severity)
    if family == "stutter":
        return wave
    raise KeyError(family)


# ---------------------------------------------------------------- valve (solenoid)
def valve_params(rng: np.random.Generator) -> dict:
    clicks = int(rng.integers(2, 5))
    return dict(
        cycle_s=float(rng.uniform(0.6, 1.2)),
        offsets=[float(x) for x in np.sort(rng.uniform(0, 0.85, clicks))],
        click_hz=float(rng.uniform(1500, 5000)),
        click_decay_s=float(rng.uniform(0.003, 0.012)),
        hiss_band=[float(rng.uniform(1000, 3000)), float(rng.uniform(4000, 7500))],
    )


def render_valve(p: dict, n: int, sr: int, rng: np.random.Generator, fault: Fault) -> np.ndarray:
    cycle = p["cycle_s"] * rng.uniform(0.98, 1.02)
    starts = np.arange(-rng.uniform(0, cycle), n / sr, cycle)
    times = (starts[:, None] + cycle * np.asarray(p["offsets"])[None, :]).ravel()
    times = times + rng.normal(0, 0.004, times.shape)
    amps = rng.uniform(0.8, 1.2, times.shape)
    click_hz, decay = p["click_hz"], p["click_decay_s"]
    hiss = 0.05 * band_noise(n, sr, rng, *p["hiss_band"])
    if fault is not None:
        family, severity = fault
        if family == "missing_clicks":
            amps = amps * (rng.uniform(size=times.shape) > 0.65 * severity)
        elif family == "extra_clicks":
            extra = rng.uniform(0, n / sr, max(1, int(len(times) * 0.7 * severity)))
            times, amps = np.concatenate([times, extra]), np.concatenate([amps, rng.uniform(0.5, 1.0, len(extra))])
        elif family == "displaced_strokes":  # a sticking spool: some strokes come late
            late = rng.uniform(size=times.shape) < 0.2 + 0.5 * severity
            times = times + late * rng.uniform(0.05, 0.25, times.shape) * cycle
        elif family == "contamination":
            click_hz *= 1 - 0.35 * severity
            decay *= 1 + 2 * severity
            hiss *= 1 + 6 * severity
        else:
            raise KeyError(family)
    return impacts(times, n, sr, click_hz, decay, amps) + hiss


# ---------------------------------------------------------------- ToyCar (motor + gears)
def toycar_params(rng: np.random.Generator) -> dict:
    return dict(
        motor_hz=float(rng.uniform(250, 700)),
        teeth=int(rng.integers(8, 20)),
        gear_ratio=float(rng.uniform(3, 8)),
        harmonics=[float(a) for a in rng.uniform(0.2, 1.0, 5)],
        rumble_band=[float(rng.uniform(50, 150)), float(rng.uniform(800, 2000))],
    )


def render_toycar(p: dict, n: int, sr: int, rng: np.random.Generator, fault: Fault) -> np.ndarray:
    motor = p["motor_hz"] * (1 + 0.01 * slow_noise(n, sr, rng, 3.0)) * rng.uniform(0.98, 1.02)
    if fault is not None and fault[0] == "speed_drift":
        motor = motor * speed_drift(n, fault[1])
    gear_rot = motor / p["gear_ratio"]
    whine = harmonic_tone(motor, p["harmonics"], sr, rng)
    mesh = harmonic_tone(gear_rot * p["teeth"], [1.0, 0.4], sr, rng)
    rumble = band_noise(n, sr, rng, *p["rumble_band"], tilt=-3)
    wave = whine + 0.5 * mesh + 0.6 * rumble * rms(whine)
    if fault is None:
        return wave
    family, severity = fault
    if family == "speed_drift":
        return wave
    if family == "gear_tooth_fault":
        hits = impacts(periodic_times(n, sr, 1.0 / float(np.mean(gear_rot)), rng, 0.01), n, sr,
                       rng.uniform(1500, 4000), 0.003)
        return wave + _scaled(hits, wave, 0.75 * severity)
    return wave + ROTATING_FAULTS[family](wave, gear_rot, {"bearing_hz": 3000.0}, n, sr, rng, severity)


# ---------------------------------------------------------------- ToyConveyor (belt)
def toyconveyor_params(rng: np.random.Generator) -> dict:
    return dict(
        thump_period_s=float(rng.uniform(0.15, 0.5)),
        thump_hz=float(rng.uniform(80, 400)),
        motor_hz=float(rng.uniform(90, 220)),
        roller_band=[float(rng.uniform(300, 1000)), float(rng.uniform(2500, 5000))],
        roller_level=float(rng.uniform(0.3, 1.0)),
    )


def render_toyconveyor(p: dict, n: int, sr: int, rng: np.random.Generator, fault: Fault) -> np.ndarray:
    period = p["thump_period_s"] * rng.uniform(0.97, 1.03)
    thumps = impacts(periodic_times(n, sr, period, rng, 0.01), n, sr, p["thump_hz"], 0.03)
    motor = harmonic_tone(np.full(n, p["motor_hz"]), [1, 0.6, 0.3, 0.2], sr, rng)
    roller = band_noise(n, sr, rng, *p["roller_band"])
    wave = _scaled(thumps, motor, 1.5) + motor + p["roller_level"] * roller * rms(motor)
    if fault is None:
        return wave
    family, severity = fault
    if family == "rattle":
        return wave + rattle(wave, n, sr, rng, (5, 15), (800, 3000), 0.006, 0.65 * severity)
    return wave + ROTATING_FAULTS[family](wave, np.full(n, 1.0 / period), {"bearing_hz": 2500.0},
                                          n, sr, rng, severity)


# ---------------------------------------------------------------- registry
MACHINES: dict[str, dict] = {
    "fan": dict(params=lambda r: rotating_params(r, (18, 45), (4, 9), (0.5, 1.5)), render=render_rotating,
                faults=("imbalance", "bearing_damage", "rubbing")),
    "pump": dict(params=lambda r: rotating_params(r, (24, 60), (5, 8), (1.0, 2.5)), render=render_rotating,
                 faults=("clogging", "cavitation", "bearing_damage")),
    "slider": dict(params=slider_params, render=render_slider, faults=("rattle", "rubbing")),
    "valve": dict(params=valve_params, render=render_valve,
                  faults=("missing_clicks", "extra_clicks", "contamination")),
    "ToyCar": dict(params=toycar_params, render=render_toycar,
                   faults=("gear_tooth_fault", "bearing_damage", "imbalance")),
    "ToyConveyor": dict(params=toyconveyor_params, render=render_toyconveyor,
                        faults=("rattle", "rubbing", "bearing_damage")),
}


# faults only the `hard` toy factory draws (adding them to `faults` would change every clip the other presets make)
TIMING_RICH_FAULTS = {
    "fan": ("speed_drift", "load_modulation"), "pump": ("speed_drift", "load_modulation"),
    "slider": ("stutter",), "valve": ("displaced_strokes",), "ToyCar": ("speed_drift",), "ToyConveyor": (),
}

# how each fault shows: "timing" faults change when or how regularly the machine sounds (a modulation, a stalled
# or surging flow, strokes missing or added), "added-sound" faults add a sound of their own
FAULT_KINDS = {
    "imbalance": "timing", "clogging": "timing", "missing_clicks": "timing", "extra_clicks": "timing",
    "speed_drift": "timing", "load_modulation": "timing", "stutter": "timing", "displaced_strokes": "timing",
    "bearing_damage": "added-sound", "rubbing": "added-sound", "cavitation": "added-sound",
    "gear_tooth_fault": "added-sound", "rattle": "added-sound", "contamination": "added-sound",
}


def factory_background(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Plant noise: pinkish broadband, mains hum with harmonics, distant random clunks; unit RMS."""
    pink = band_noise(n, sr, rng, 20, sr / 2 - 1, tilt=-3)
    hum = harmonic_tone(np.full(n, rng.choice([50.0, 60.0])), [1, 0.5, 0.3, 0.2], sr, rng)
    count = int(n / sr * rng.uniform(0, 3))
    clunks = impacts(rng.uniform(0, n / sr, count), n, sr, rng.uniform(100, 600), 0.05) if count else np.zeros(n)
    wave = pink + 0.3 * hum / rms(hum) + (0.8 * clunks / rms(clunks) if count else 0)
    return wave / rms(wave)
