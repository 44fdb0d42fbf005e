import numpy as np
import pytest
import soundfile as sf

from rcmae.data.audio import AudioError, fit_length, load_clip, write_wav
from rcmae.sections import AudioConfig


def sine(seconds, rate, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_stereo_44k_becomes_mono_16k(tmp_path):
    path = tmp_path / "stereo.wav"
    stereo = sine(1.0, 44100, channels=2)
    stereo[:, 1] *= 0.5
    sf.write(path, stereo, 44100, subtype="FLOAT")
    wave = load_clip(path, AudioConfig())
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 16000) <= 1
    # mono mix of amplitudes 0.5 and 0.25 -> 0.375 peak, preserved by resampling
    assert np.max(np.abs(wave[100:-100])) == pytest.approx(0.375, abs=0.01)


def test_pad_and_crop_policy(tmp_path):
    path = tmp_path / "short.wav"
    write_wav(path, sine(0.5, 16000), 16000)
    padded = load_clip(path, AudioConfig(clip_seconds=2.0, pad_mode="zeros"))
    assert len(padded) == 32000 and not np.any(padded[8000:])
    repeated = load_clip(path, AudioConfig(clip_seconds=2.0, pad_mode="repeat"))
    np.testing.assert_allclose(repeated[8000:16000], repeated[:8000])
    cropped = fit_length(np.arange(10.0), 4, "zeros")
    np.testing.assert_array_equal(cropped, [3, 4, 5, 6])


def test_truncated_header_is_rejected_with_reason(tmp_path):
    path = tmp_path / "truncated.wav"
    write_wav(path, sine(1.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError, match="unreadable or truncated") as info:
        load_clip(path, AudioConfig())
    assert str(path) in str(info.value)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="unreadable"):
        load_clip(path, AudioConfig())


def test_zero_length_audio_is_rejected(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="zero-length"):
        load_clip(path, AudioConfig())


def test_nan_audio_is_rejected(tmp_path):
    path = tmp_path / "nan.wav"
    wave = sine(1.0, 16000)
    wave[100] = np.nan
    sf.write(path, wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_clip(path, AudioConfig())


def test_silent_and_too_short_audio_are_rejected(tmp_path):
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(16000), 16000)
    with pytest.raises(AudioError, match="all zeros"):
        load_clip(silent, AudioConfig())
    short = tmp_path / "short.wav"
    write_wav(short, sine(0.1, 16000), 16000)
    with pytest.raises(AudioError, match="shorter than the minimum"):
        load_clip(short, AudioConfig(min_seconds=0.25))


def test_bytes_input_decodes_like_a_path(tmp_path):
    path = tmp_path / "clip.wav"
    write_wav(path, sine(1.0, 16000), 16000)
    np.testing.assert_array_equal(load_clip(path.read_bytes(), AudioConfig(), label=path),
                                  load_clip(path, AudioConfig()))


def test_clips_much_longer_than_the_crop_get_a_note_naming_the_settings_that_keep_them(tmp_path):
    import soundfile as sf

    from rcmae.config import tiny
    from rcmae.data.audio import cropping_note

    long_clips, short_clips = [], []
    for i in range(3):
        long_clips.append(str(tmp_path / f"long_{i}.wav"))
        sf.write(long_clips[-1], np.zeros(160000, dtype=np.float32), 16000)  # 10 s, as DCASE
        short_clips.append(str(tmp_path / f"short_{i}.wav"))
        sf.write(short_clips[-1], np.zeros(32000, dtype=np.float32), 16000)  # 2 s, as the toy factory
    note = cropping_note(long_clips, tiny().audio)
    assert "~10.0 s" in note and "--preset cpu" in note and "--preset paper" in note
    assert "audio.clip_seconds=10" in note and "features.n_frames=320" in note  # 313 frames in 8x10 patches
    assert cropping_note(short_clips, tiny().audio) is None
    assert cropping_note(long_clips, tiny().override({"audio.clip_seconds": 10.0}).audio) is None


def test_run_picks_the_cpu_preset_for_long_clips_and_keeps_them_whole(tmp_path):
    import soundfile as sf

    from rcmae.config import cpu
    from rcmae.data.audio import cropping_note, frames_for
    from rcmae.run import preset_for_data

    for seconds, root in ((10, tmp_path / "long"), (2, tmp_path / "short")):
        folder = root / "fan" / "train"
        folder.mkdir(parents=True)
        for i in range(3):
            sf.write(folder / f"normal_id_00_{i:08d}.wav", np.zeros(16000 * seconds, dtype=np.float32), 16000)
    assert preset_for_data(tmp_path / "long") == "cpu" and preset_for_data(tmp_path / "short") == "tiny"
    config = cpu()
    long_clips = [str(p) for p in (tmp_path / "long").rglob("*.wav")]
    assert cropping_note(long_clips, config.audio) is None
    assert config.features.n_frames >= frames_for(10.0)  # every frame of a 10 s clip fits
    assert config.features.num_patches == 128
