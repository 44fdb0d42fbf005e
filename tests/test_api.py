"""The Python API: README's example runs, scores equal `rcmae score`'s, and Ray is never imported."""

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import rcmae
from rcmae import Detector
from rcmae.cli import main
from rcmae.errors import RcmaeError

README = Path(__file__).resolve().parents[1] / "README.md"


def clip(toy_root, name="anomaly_id_00_00000000.wav"):
    return toy_root / "dev_data" / "valve" / "test" / name


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(finetuned_model, toy_root, capsys):
    code = readme_example().replace("runs/main/finetune/model", str(finetuned_model)).replace(
        "runs/main/data/dev_data/fan/test/anomaly_id_00_00000000.wav", str(clip(toy_root)))
    exec(code, {})
    printed = capsys.readouterr().out.split()
    expected = Detector.load(finetuned_model).score_file(clip(toy_root))
    assert float(printed[0]) == pytest.approx(expected.score, rel=1e-6)
    assert printed[1] == str(expected.decision)
    assert float(printed[2]) == pytest.approx(expected.threshold, rel=1e-6)


def test_scores_equal_the_cli_and_in_memory_waves_equal_files(finetuned_model, toy_root, capsys):
    detector = Detector.load(finetuned_model)
    path = clip(toy_root)
    from_file = detector.score_file(path)
    main(["score", "--checkpoint", str(finetuned_model), str(path)])
    cli = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert from_file.score == pytest.approx(cli["score"][0], rel=1e-5)
    assert int(from_file.decision) == cli["decision"][0]
    assert from_file.decision == (from_file.score > from_file.threshold)
    wave, rate = sf.read(path, dtype="float32")
    in_memory = detector.score(wave, rate, "valve", 0)
    assert in_memory.score == pytest.approx(from_file.score, rel=1e-5) and in_memory.window_starts_s == (0.0,)
    stereo = detector.score(np.stack([wave, wave]), rate, "valve", "00")  # [channels, n]: downmixed
    assert stereo.score == pytest.approx(from_file.score, rel=1e-5)


def test_a_long_wave_is_windowed_and_an_unknown_machine_is_one_error(finetuned_model, toy_root):
    detector = Detector.load(finetuned_model)  # the default aggregate: the mean
    wave, rate = sf.read(clip(toy_root), dtype="float32")
    result = detector.score(np.concatenate([wave, wave, wave]), rate, "valve", "00")  # 6 s with a 2 s model
    assert result.window_starts_s == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert result.score == pytest.approx(np.mean(result.window_scores))
    with pytest.raises(RcmaeError, match="unknown machine pump/00"):
        detector.score(wave, rate, "pump", "00")
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert rcmae.__version__ == project["version"]  # the installed package's, as pyproject.toml says


def test_the_api_never_imports_ray(finetuned_model, toy_root):
    probe = (f"import sys\nfrom rcmae import Detector\nDetector.load({str(finetuned_model)!r})"
             f".score_file({str(clip(toy_root))!r})\nprint('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
