"""The toy factory: a DCASE-layout data set synthesised from the sound models.

`synthesize(out, preset, seed)` writes out/dev_data/<type>/{train,test}/{normal,anomaly}_id_XX_NNNNNNNN.wav
(16 kHz mono 16-bit PCM) and out/manifest.json (every ID's parameters, every clip's SNR and every
anomaly's family, severity and `region`: the time spans and the frequency band in which its fault sounds).
The same seed gives byte-identical files. The `hard` preset makes faults brief (0.2-2 s from a random onset)
over louder, impulsive background, and adds timing faults (speed drift, load modulation, a stuttering slide,
late valve strokes). With `additional`, it also
writes out/eval_data/<type>/train/ for other machines of each type (odd IDs), as DCASE 2020's additional
training set does for its evaluation machines: the paper's stage 2 classifies over both sets' IDs.

`layout="dcase2021"` writes the DCASE 2021-2025 names instead (one section per machine,
section_XX_{source,target}_{train,test}_{normal,anomaly}_NNNN.wav) with a target domain: a shifted recording
condition (the machine run at other settings, in louder background) with only a few train clips, as
those years give. `layout="folders"` writes a plant's own tree (`<type>/unit_<ID>/{train,test}/<label>_NNNN.wav`),
`layout="manifest"` files named `rec_NNNNN.wav` with out/clips.csv listing each one's machine, split and label
(`rcmae.data.own_recordings`). `layout="dcase2023"` is the 2023-2025 shape: one section per machine type, its machines
written as the section's operating modes, named by attributes (`..._NNNN_mode_2`, `..._mode_2_shifted` in the
target domain).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rcmae.data.audio import rms, write_wav
from rcmae.data.sound_models import MACHINES, TIMING_RICH_FAULTS, factory_background, impacts
from rcmae.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SynthPreset:
    clip_seconds: float
    ids_per_type: int
    ids_toyconveyor: int
    train_per_id: int
    test_normal_per_id: int
    test_anomaly_per_id: int
    snr_db: tuple[float, float]
    severity: tuple[float, float]
    fault_seconds: tuple[float, float] | None = None  # a fault sounds this long, from a random onset (None: all clip)
    impulses_db: float | None = None  # extra impulsive background (door slams, drops) at this level to the machine
    timing_rich: bool = False  # also draw the faults of `sound_models.TIMING_RICH_FAULTS` (drifts, modulation, ...)


PRESETS = {
    "small": SynthPreset(clip_seconds=2.0, ids_per_type=3, ids_toyconveyor=3, train_per_id=30,
                         test_normal_per_id=12, test_anomaly_per_id=12, snr_db=(0.0, 12.0),
                         severity=(0.02, 0.55)),
    "full": SynthPreset(clip_seconds=10.0, ids_per_type=7, ids_toyconveyor=6, train_per_id=300,
                        test_normal_per_id=60, test_anomaly_per_id=60, snr_db=(-3.0, 12.0),
                        severity=(0.02, 0.55)),
    # brief, intermittent faults anywhere in the clip, over louder and impulsive background
    "hard": SynthPreset(clip_seconds=4.0, ids_per_type=3, ids_toyconveyor=3, train_per_id=30,
                        test_normal_per_id=12, test_anomaly_per_id=12, snr_db=(-3.0, 9.0),
                        severity=(0.1, 0.7), fault_seconds=(0.2, 2.0), impulses_db=-6.0, timing_rich=True),
}
REGION_FRAME = 512  # samples per frame when locating where a fault sounds (32 ms at 16 kHz)
REGION_SHARE = 0.1  # a frame belongs to the fault when its fault energy is this share of the loudest frame's


@dataclass(frozen=True)
class ToyData:
    """The toy factory `rcmae run` synthesises when it is given no data."""

    preset: str = "small"
    seed: int = 0
    types: tuple[str, ...] = tuple(MACHINES)


def machine_ids(machine_type: str, preset: SynthPreset, evaluation: bool = False) -> list[int]:
    count = preset.ids_toyconveyor if machine_type == "ToyConveyor" else preset.ids_per_type
    return [2 * i + int(evaluation) for i in range(count)]  # even IDs in dev, odd ones in eval, as DCASE 2020


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator keyed by the seed and names, so any single clip can be regenerated alone."""
    return np.random.default_rng([seed] + [zlib.crc32(str(k).encode()) for k in keys])


ID_SPREAD = 0.35  # how far an ID's parameters stray from its type's (1 would make IDs independent draws)


def blend(base, variant, share: float):
    """`base` moved `share` of the way to `variant`, field by field (ints stay ints)."""
    if isinstance(base, dict):
        return {key: blend(base[key], variant[key], share) for key in base}
    if isinstance(base, list):
        return [blend(b, v, share) for b, v in zip(base, variant)]
    if isinstance(base, int):
        return int(round(base + share * (variant - base)))
    return float(base + share * (variant - base))


def id_params(seed: int, machine_type: str, machine_id: int) -> dict:
    """Machines of one type share a design (the type's parameters) and differ by ID within ID_SPREAD,
    as real machines of one model do: close enough that telling IDs apart needs detail."""
    draw = MACHINES[machine_type]["params"]
    return blend(draw(_rng(seed, "type", machine_type)), draw(_rng(seed, "params", machine_type, machine_id)),
                 ID_SPREAD)


LAYOUTS = ("dcase2020", "dcase2021", "dcase2023", "folders", "manifest")
SECTIONED = ("dcase2021", "dcase2023")  # the layouts with a target domain
CLIP_LIST = "clips.csv"  # layout "manifest": the list of clips `--data` takes
TARGET_TRAIN_PER_SECTION = 3  # the target domain's few train clips (DCASE 2022-2025: 10 of ~1000)
TARGET_SHIFT = 0.5            # how far the target condition moves a machine's parameters
TARGET_SNR_DROP_DB = 4.0      # and how much louder its background is


def target_params(seed: int, machine_type: str, machine_id: int, params: dict) -> dict:
    """The same machine under the target domain's condition (other speed, load, ...)."""
    draw = MACHINES[machine_type]["params"]
    return blend(params, draw(_rng(seed, "target", machine_type, machine_id)), TARGET_SHIFT)


def render_clip(seed: int, machine_type: str, machine_id: int, params: dict, preset: SynthPreset,
                split: str, label: str, number: int, domain: str = "source") -> tuple[np.ndarray, dict]:
    """One clip's samples (peak <= 0.9) and its manifest record."""
    keys = ("clip", machine_type, machine_id, split, label, number) + (("target",) if domain == "target" else ())
    rng = _rng(seed, *keys)
    n = int(preset.clip_seconds * SAMPLE_RATE)
    fault = None
    record: dict = {}
    if label == "anomaly":
        faults = MACHINES[machine_type]["faults"] + (TIMING_RICH_FAULTS[machine_type] if preset.timing_rich else ())
        family = str(rng.choice(faults))
        severity = float(rng.uniform(*preset.severity))
        fault = (family, severity)
        record.update(family=family, severity=round(severity, 4))
    render = MACHINES[machine_type]["render"]
    # the same draws without the fault: every sound model draws its normal sound first (a copy, so the clip's own
    # draws, and with them every file of the presets without gating, stay as they were)
    normal = render(params, n, SAMPLE_RATE, copy.deepcopy(rng), None) if fault is not None else None
    machine = render(params, n, SAMPLE_RATE, rng, fault)
    if fault is not None:
        if preset.fault_seconds is not None:
            gate = fault_gate(n, preset.fault_seconds, _rng(seed, "gate", *keys))
            machine = normal + gate * (machine - normal)
        record["region"] = fault_region(machine - normal, SAMPLE_RATE)
    snr_db = float(rng.uniform(*preset.snr_db)) - (TARGET_SNR_DROP_DB if domain == "target" else 0.0)
    noise = factory_background(n, SAMPLE_RATE, rng) * rms(machine) / (10 ** (snr_db / 20))
    if preset.impulses_db is not None:
        noise = noise + impulsive_background(n, SAMPLE_RATE, _rng(seed, "impulses", *keys)) * rms(machine) * (
            10 ** (preset.impulses_db / 20))
    wave = machine + noise
    wave = wave / np.max(np.abs(wave)) * rng.uniform(0.3, 0.9)
    record["snr_db"] = round(snr_db, 3)
    return wave, record


def fault_gate(n: int, seconds: tuple[float, float], rng: np.random.Generator, fade_s: float = 0.02) -> np.ndarray:
    """1 while a brief fault sounds (a random length in `seconds`, a random onset), 0 elsewhere, with short fades."""
    length = min(n, int(rng.uniform(*seconds) * SAMPLE_RATE))
    start = int(rng.integers(0, n - length + 1))
    gate = np.zeros(n)
    gate[start:start + length] = 1.0
    fade = min(int(fade_s * SAMPLE_RATE), length // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        gate[start:start + fade] = ramp
        gate[start + length - fade:start + length] = ramp[::-1]
    return gate


def fault_region(fault_part: np.ndarray, sr: int) -> dict:
    """Where and in which band a fault sounds, from what it adds to the clip (the clip minus the same clip without
    it): `spans`, [start, end] seconds of the frames holding at least REGION_SHARE of the loudest frame's fault
    energy, and `band_hz`, the frequencies holding the middle 90 % of its energy."""
    frames = len(fault_part) // REGION_FRAME
    energy = (fault_part[:frames * REGION_FRAME].reshape(frames, REGION_FRAME) ** 2).sum(axis=1)
    if energy.max() <= 0:  # a fault too slight to change a sample (no stroke dropped at this severity)
        return {"spans": [], "band_hz": None}
    active = energy >= REGION_SHARE * energy.max()
    spans, start = [], None
    for i, on in enumerate([*active, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append([round(start * REGION_FRAME / sr, 3), round(i * REGION_FRAME / sr, 3)])
            start = None
    power = np.abs(np.fft.rfft(fault_part)) ** 2
    share = np.cumsum(power) / float(power.sum())
    freqs = np.fft.rfftfreq(len(fault_part), 1 / sr)
    band = [float(freqs[min(np.searchsorted(share, q), len(freqs) - 1)]) for q in (0.05, 0.95)]
    return {"spans": spans, "band_hz": [round(band[0], 1), round(band[1], 1)]}


def impulsive_background(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Loud, sparse knocks and slams of the plant (not of the machine), unit RMS."""
    count = max(1, int(n / sr * rng.uniform(0.5, 2.0)))
    knocks = impacts(rng.uniform(0, n / sr, count), n, sr, rng.uniform(150, 2500), 0.02,
                     rng.uniform(0.5, 1.0, count))
    return knocks / rms(knocks)


def clip_name(label: str, machine_id: int, number: int) -> str:
    return f"{label}_id_{machine_id:02d}_{number:08d}.wav"


def section_clip_name(domain: str, split: str, label: str, section: int, number: int, attributes: str = "") -> str:
    return f"section_{section:02d}_{domain}_{split}_{label}_{number:04d}{'_' + attributes if attributes else ''}.wav"


def mode_attributes(machine_id: int, domain: str) -> str:
    """dcase2023: the attribute string of a machine's operating mode (the target domain's shifted one apart)."""
    return f"mode_{machine_id}" + ("_shifted" if domain == "target" else "")


def clip_plan(spec: SynthPreset, layout: str, evaluation: bool) -> list[tuple[str, str, str, int]]:
    """(domain, split, label, count) per machine."""
    if layout not in SECTIONED:
        tests = [("source", "test", "normal", spec.test_normal_per_id),
                 ("source", "test", "anomaly", spec.test_anomaly_per_id)]
        return [("source", "train", "normal", spec.train_per_id)] + ([] if evaluation else tests)
    plan = [("source", "train", "normal", spec.train_per_id), ("target", "train", "normal", TARGET_TRAIN_PER_SECTION)]
    for domain in ("source", "target"):
        plan += [(domain, "test", "normal", max(1, spec.test_normal_per_id // 2)),
                 (domain, "test", "anomaly", max(1, spec.test_anomaly_per_id // 2))]
    return plan


def synthesize(out: str | Path, preset: str = "small", seed: int = 0,
               types: tuple[str, ...] = tuple(MACHINES), additional: bool = False, layout: str = "dcase2020",
               clip_seconds: float | None = None, train_per_id: int | None = None) -> Path:
    """Write the toy-factory data set under `out` (and its additional training set with `additional`), with
    the preset's clip length or `clip_seconds` and train clips per ID or `train_per_id` (clips are keyed by their
    number, so a smaller set's train clips are the first of a larger one's and the test clips are the same);
    returns what `--data` takes: out/dev_data (out/clips.csv for the manifest layout)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synth preset {preset!r}; choose from {sorted(PRESETS)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
    if additional and layout != "dcase2020":
        raise ConfigError("--additional is DCASE 2020's additional training set: use it with the dcase2020 layout")
    if clip_seconds is not None and not 0.5 <= clip_seconds <= 60:
        raise ConfigError(f"clip length must be between 0.5 and 60 s, got {clip_seconds}")
    if train_per_id is not None and not 3 <= train_per_id <= 5000:
        raise ConfigError(f"train clips per ID must be between 3 and 5000, got {train_per_id}")
    unknown = set(types) - set(MACHINES)
    if unknown:
        raise ConfigError(f"unknown machine types {sorted(unknown)}; known: {sorted(MACHINES)}")
    spec = PRESETS[preset]
    spec = replace(spec, clip_seconds=clip_seconds or spec.clip_seconds,
                   train_per_id=train_per_id or spec.train_per_id)
    out = Path(out)
    root = out / "dev_data"
    listed: list[dict] = []  # layout "manifest": its rows
    manifest: dict = dict(preset=preset, seed=seed, sample_rate=SAMPLE_RATE, spec=asdict(spec), layout=layout,
                          machines={}, clips={})
    sets = [("dev_data", False)] + ([("eval_data", True)] if additional else [])
    for (folder, evaluation), machine_type in ((s, t) for s in sets for t in types):
        manifest["machines"].setdefault(machine_type, {})
        for section, machine_id in enumerate(machine_ids(machine_type, spec, evaluation)):
            params = id_params(seed, machine_type, machine_id)
            manifest["machines"][machine_type][f"{machine_id:02d}"] = params
            shifted = target_params(seed, machine_type, machine_id, params) if layout in SECTIONED else None
            for domain, split, label, count in clip_plan(spec, layout, evaluation):
                for number in range(count):
                    wave, record = render_clip(seed, machine_type, machine_id,
                                               shifted if domain == "target" else params, spec, split, label,
                                               number, domain)
                    if layout == "dcase2020":
                        relative = f"{folder}/{machine_type}/{split}/{clip_name(label, machine_id, number)}"
                    elif layout == "dcase2021":
                        name = section_clip_name(domain, split, label, section, number)
                        relative = f"{folder}/{machine_type}/{split}/{name}"
                    elif layout == "dcase2023":  # one section per type: its machines as modes, named by attributes
                        name = section_clip_name(domain, split, label, 0, section * count + number,
                                                 mode_attributes(machine_id, domain))
                        relative = f"{folder}/{machine_type}/{split}/{name}"
                    elif layout == "folders":  # a plant's own tree: <type>/<machine>/<split>/, its own names
                        relative = f"{folder}/{machine_type}/unit_{machine_id:02d}/{split}/{label}_{number:04d}.wav"
                    else:  # names that say nothing: the list of clips says it all
                        relative = f"{folder}/recordings/rec_{len(manifest['clips']):05d}.wav"
                        listed.append(dict(path=relative, machine_type=machine_type,
                                           machine_id=f"unit_{machine_id:02d}", split=split, label=label))
                    write_wav(out / relative, wave, SAMPLE_RATE)
                    manifest["clips"][relative] = record
            log.info(f"synth: {folder} {machine_type} id_{machine_id:02d} done")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if layout == "manifest":
        pacsv.write_csv(pa.Table.from_pylist(listed), out / CLIP_LIST)
        return out / CLIP_LIST
    return root


def toy_data(folder: str | Path, toy: ToyData, force: bool = False) -> Path:
    """`folder` holding the `toy` factory: made when absent, kept when a run made it with the same preset, seed
    and machine types; one made with others is refused (it would be augmented and trained on silently) unless
    `force`, which makes it again."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.exists():
        made = json.loads(manifest.read_text())
        made_as = ToyData(made.get("preset"), made.get("seed"), tuple(made.get("machines", {})))
        if made_as.preset == toy.preset and made_as.seed == toy.seed and set(made_as.types) == set(toy.types):
            return folder
        if not force:
            raise ConfigError(f"{folder} holds the toy factory made as {made_as.preset}, seed {made_as.seed}, "
                              f"{', '.join(made_as.types)}; this run asks for {toy.preset}, seed {toy.seed}, "
                              f"{', '.join(toy.types)}: give another --out, or --force to make it again")
        shutil.rmtree(folder)
    log.info(f"synth: the toy factory ({toy.preset}, seed {toy.seed}, {', '.join(toy.types)}) into {folder}")
    synthesize(folder, preset=toy.preset, seed=toy.seed, types=toy.types)
    return folder
