"""The fault matrix: hostile and degenerate inputs a user meets, each checked for its exit code, its one-line
message and what it leaves on disk (README, "What happens when")."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dcase_files import assert_metrics_match_score_files
from listeners import beyond_loopback
from rcmae.cli import main
from rcmae.data.synth import synthesize
from rcmae.errors import EXIT
from rcmae.models.checkpoint import DETECTOR, CheckpointError, read_meta

QUICK = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--set", "augment.variants=1"]
ALIAS_BOMB = "[" + ",".join(["&a0 [x,x,x,x,x,x,x,x,x]"] + [
    f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]) + "]"


def degenerate_layout(out: Path, train_clips: dict[str, list[int]], test_normals: int | None = None) -> Path:
    """The toy factory with each ID's train clips replaced by N near-identical copies of one clip (N from
    `train_clips[type]`, ID by ID) and, optionally, `test_normals` normal test clips per ID."""
    synthesize(out, preset="small", seed=0, types=tuple(train_clips))
    rng = np.random.default_rng(0)
    for machine_type, counts in train_clips.items():
        folder = out / "dev_data" / machine_type
        ids = sorted({path.name.split("_")[2] for path in (folder / "train").glob("*.wav")})
        for machine_id, count in zip(ids, counts):
            clips = sorted((folder / "train").glob(f"normal_id_{machine_id}_*.wav"))
            wave, rate = sf.read(clips[0])
            for clip in clips:
                clip.unlink()
            for clip in clips[:count]:
                sf.write(clip, wave + 1e-5 * rng.standard_normal(len(wave)), rate)
            if test_normals is not None:
                for clip in sorted((folder / "test").glob(f"normal_id_{machine_id}_*.wav"))[test_normals:]:
                    clip.unlink()
    return out


# root reads any file: permission checks run without the capabilities that let it (CI runs as root)
UNPRIVILEGED = (["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
                if os.geteuid() == 0 else [])


def last_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- degenerate data: every fit has a fallback
@pytest.mark.slow
@pytest.mark.ray
def test_ids_of_one_to_four_near_identical_train_clips_are_all_scored(ray_session, tmp_path):
    data = degenerate_layout(tmp_path / "data", {"fan": [1, 2, 4], "valve": [3, 3, 3]}, test_normals=5)
    out = tmp_path / "run"
    # in-process stages: the fits are the same functions on Ray (detect/apply.fit_machine per machine type)
    assert main(["run", "--data", str(data), "--out", str(out), "--no-baseline", *QUICK,
                 "--set", "scale.num_workers=0"]) == EXIT.ok
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {(r["machine_type"], r["machine_id"]) for r in metrics["per_id"]} == {
        (t, i) for t in ("fan", "valve") for i in ("00", "02", "04")}
    assert all(r["pauc_eq12"] is None and "at least 10 normal clips" in r["note"] for r in metrics["per_id"])
    assert_metrics_match_score_files(out / "evaluation", metrics)
    detector = read_meta(out / "finetune" / "model").detector
    methods = {used for per_key in detector.threshold_methods.values() for used in per_key.values()}
    assert methods <= {"gamma", "percentile", "constant"} and "percentile" in methods
    assert all(np.isfinite(v) for per_key in detector.thresholds.values() for v in per_key.values())
    assert detector.few_shot == ["fan/00", "fan/02"]
    for machine_id in ("00", "02", "04"):
        scores = pd.read_csv(out / "evaluation" / f"anomaly_score_fan_id_{machine_id}.csv", header=None)
        assert len(scores) == 5 + 12 and np.isfinite(scores[1]).all()


@pytest.mark.slow
def test_a_single_machine_id_is_trained_and_scored_in_process(tmp_path, capsys):
    data = tmp_path / "data"
    synthesize(data, preset="small", seed=1, types=("valve",))
    for clip in (data / "dev_data" / "valve").rglob("*_id_0[24]_*.wav"):
        clip.unlink()
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(out), "--no-baseline", *QUICK,
                 "--set", "scale.num_workers=0"]) == EXIT.ok
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert [(r["machine_type"], r["machine_id"]) for r in metrics["per_id"]] == [("valve", "00")]
    # one class: the ID head is certain of every clip, so its score is constant and its threshold the fallback
    assert read_meta(out / "finetune" / "model").detector.threshold_methods["id_logprob"] == {
        "valve/00": "constant"}
    assert "train scores are all equal" in capsys.readouterr().err


# ---------------------------------------------------------------- a stage is finished only when all of it is there
def test_an_interrupted_detector_fit_leaves_no_model_and_the_rerun_redoes_it(toy_features, quick_config, tmp_path,
                                                                            monkeypatch):
    from rcmae import stages
    from rcmae.train import local

    pretrained = stages.pretrain(quick_config, toy_features, tmp_path / "pretrain")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C or a kill during the fit

    monkeypatch.setattr(local, "fit_from_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    assert not (tmp_path / "finetune" / "model").exists()
    assert not list((tmp_path / "finetune").glob(".*.partial"))
    monkeypatch.undo()
    model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    assert read_meta(model).detector is not None and (model / DETECTOR).is_file()


@pytest.mark.parametrize("older", ["no detector", "an older detector"])
def test_a_model_folder_without_a_current_detector_is_refit_without_retraining(toy_features, quick_config, tmp_path,
                                                                              older):
    from rcmae import stages
    from rcmae.detect.detector import DETECTOR_FORMAT
    from rcmae.detect.detector_files import load_detector

    pretrained = stages.pretrain(quick_config, toy_features, tmp_path / "pretrain")
    model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    weights = (model / "model.safetensors").read_bytes()
    meta = json.loads((model / "meta.json").read_text())
    if older == "no detector":  # a folder published before the fit, by rcmae 0.1
        (model / DETECTOR).unlink()
        del meta["detector"]
    else:  # rcmae 0.1's detector: Gaussians only, no "format"
        del meta["detector"]["format"]
    (model / "meta.json").write_text(json.dumps(meta))
    if older == "an older detector":
        with pytest.raises(CheckpointError, match="fitted by an older rcmae.*without retraining"):
            load_detector(model)
    assert stages.claim(tmp_path / "finetune", stages.FINETUNE, quick_config, force=False) is None
    model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    assert read_meta(model).detector.format == DETECTOR_FORMAT
    assert (model / "model.safetensors").read_bytes() == weights
    load_detector(model)


# ---------------------------------------------------------------- bad values: one line, exit 2
@pytest.mark.parametrize("value", ["nan", "inf", "-.inf", "1e400", "10"])
def test_a_non_finite_or_absurd_learning_rate_is_refused_by_name(value, capsys):
    assert main(["config", "--set", f"pretrain.lr={value}"]) == EXIT.user_error
    line = last_line(capsys)
    assert line.startswith("rcmae config: error: pretrain") and "lr" in line


def test_an_alias_bomb_is_refused_quickly_from_set_file_and_space(tmp_path, capsys):
    started = time.time()
    assert main(["config", "--set", f"pretrain.lr={ALIAS_BOMB}"]) == EXIT.user_error
    assert "aliases expand" in last_line(capsys)
    config = tmp_path / "bomb.yaml"
    config.write_text(f"pretrain:\n  lr: {ALIAS_BOMB}\n")
    assert main(["config", "--config", str(config)]) == EXIT.user_error
    assert "bomb.yaml: refused" in last_line(capsys)
    space = tmp_path / "space.yaml"
    space.write_text(f"name: x\nparams:\n  pretrain.lr: {{choice: {ALIAS_BOMB}}}\n")
    assert main(["tune", "--space", str(space), "--data", str(tmp_path), "--features", str(tmp_path)]) == 2
    assert "space.yaml: refused" in last_line(capsys)
    assert time.time() - started < 20


def test_a_space_name_that_is_a_path_is_refused(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("name: ../outside\nparams:\n  model.mask_ratio: {grid: [0.5]}\n")
    assert main(["tune", "--space", str(space), "--data", str(tmp_path), "--features", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == EXIT.user_error
    assert "must be a plain name" in last_line(capsys)
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("lines, expected", [
    ("num_samples: abc", "num_samples must be a positive integer, got 'abc'"),
    ("params:\n  model.mask_ratio: {uniform: [0.5]}", "uniform takes [low, high], two finite numbers"),
    ("params:\n  pretrain.tau: {loguniform: [0, 0.2]}", "with 0 < low < high, got [0, 0.2]"),
    ("params:\n  model.mask_ratio: {grid: [0.5, 2.0]}", "can draw 2.0, which a run refuses: model.mask_ratio"),
    ("params:\n  model.no_such_key: {choice: [1]}", "unknown config key 'model.no_such_key'"),
    ("params:\n  pretrain.lambda_mae: {choice: [0.0]}\nset: {pretrain.lambda_con: 0, pretrain.lambda_vcr: 0}",
     "loss weights must be >= 0, sum > 0"),
])
def test_a_space_value_no_run_accepts_is_refused_before_ray_starts(lines, expected, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(f"name: bad\n{lines}\n")
    assert main(["tune", "--space", str(space), "--data", str(tmp_path), "--features", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == EXIT.user_error
    line = last_line(capsys)
    assert line.startswith(f"rcmae tune: error: {space}: ") and expected in line
    assert "ray:" not in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_non_finite_loss_stops_training_naming_epoch_step_and_clips(toy_features, quick_config, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rcmae import stages
    from rcmae.errors import DataError

    broken = tmp_path / "features"
    broken.mkdir()
    for part in sorted(toy_features.glob("*.parquet")):
        table = pq.read_table(part)
        flat = table["features"].combine_chunks()
        values = flat.values.to_numpy(zero_copy_only=False).copy()
        values[: len(values) // len(flat)] = np.nan  # the first clip of every file
        table = table.set_column(table.column_names.index("features"), "features",
                                 pa.ListArray.from_arrays(flat.offsets, pa.array(values)))
        pq.write_table(table, broken / part.name)
    with pytest.raises(DataError, match=r"not finite at epoch 1, step 1 .* batch clips: .*\.wav"):
        stages.pretrain(quick_config, broken, tmp_path / "pretrain")
    assert not (tmp_path / "pretrain" / "model").exists()


def test_paper_augmentation_without_weights_is_one_line(tmp_path, capsys):
    synthesize(tmp_path / "data", preset="small", seed=0, types=("valve",))
    capsys.readouterr()
    code = main(["augment", "--preset", "paper", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--set", f"augment.model={tmp_path / 'no_weights'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT.user_error and len(err) == 1
    assert err[0].startswith("rcmae augment: error: ") and "huggingface-cli download" in err[0]
    assert "Traceback" not in "\n".join(err)


def test_a_bug_prints_its_traceback_and_says_it_is_one(monkeypatch, capsys):
    from rcmae import cli, commands

    def broken(args):
        raise KeyError("threshold")

    monkeypatch.setattr(commands, "cmd_config", broken)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["config"].set_defaults(func=broken)
    assert main(["config"]) == EXIT.internal_error
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and err.strip().splitlines()[-1].endswith(
        "this is a bug in rcmae; please report it with the traceback above")


def test_a_user_error_shows_its_traceback_only_at_debug(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["config", "--config", str(missing)]) == EXIT.user_error
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--log-level", "debug", "config", "--config", str(missing)]) == EXIT.user_error
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1] == f"rcmae config: error: {missing}: config file not found"


# ---------------------------------------------------------------- nothing skipped silently
def non_utf8_copy(toy_root: Path, tmp_path: Path) -> Path:
    """The toy valve clips under a folder whose name is Latin-1 bytes, one clip renamed to a Latin-1 name that
    fits no grammar."""
    import os
    import shutil

    root = Path(os.fsdecode(bytes(tmp_path) + b"/f\xe4brik"))
    shutil.copytree(toy_root / "dev_data" / "valve", root / "dev_data" / "valve")
    first = sorted((root / "dev_data" / "valve" / "train").glob("*.wav"))[0]
    first.rename(first.parent / os.fsdecode(b"normal_id_00_m\xfchle.wav"))
    return root


def test_non_utf8_names_are_indexed_and_rejected_by_their_escaped_name(toy_root, tmp_path, capsys):
    root = non_utf8_copy(toy_root, tmp_path)
    assert main(["index", "--data", str(root), "--lenient", "--out", str(tmp_path / "index.parquet")]) == EXIT.ok
    captured = capsys.readouterr()
    assert "1 skipped" in captured.out and "f\\xe4brik" in captured.err and "m\\xfchle.wav" in captured.err
    import pyarrow.parquet as pq

    from rcmae.config import tiny
    from rcmae.data.audio import load_clip
    from rcmae.data.paths import path_of

    paths = pq.read_table(tmp_path / "index.parquet")["path"].to_pylist()
    assert len(paths) == 161 and all("f\\xe4brik" in p for p in paths)
    assert path_of(paths[0]).is_file() and load_clip(paths[0], tiny().audio).dtype == np.float32


@pytest.mark.ray
def test_non_utf8_names_pass_the_augmentation_with_every_clip_accounted_for(ray_session, toy_root, tmp_path):
    import pyarrow.parquet as pq

    from rcmae.config import tiny
    from rcmae.distributed.augment_pipeline import run_augment

    root = non_utf8_copy(toy_root, tmp_path)
    out = tmp_path / "augment"
    config = tiny().override({"augment.augmenter": "specaugment", "augment.variants": 1})
    summary = run_augment(root, out, config)
    assert summary["clips"] == 161 and summary["usable"] == 161 and summary["rejected"] == 1
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert rejects[0]["path"].endswith("m\\xfchle.wav") and "fits no known grammar" in rejects[0]["reason"]
    again = run_augment(root, out, config)  # the re-run finds everything done
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in summary.items() if k != "seconds"}


def test_an_unreadable_folder_is_reported_not_skipped_silently(toy_root, tmp_path):
    import shutil
    import subprocess
    import sys

    shutil.copytree(toy_root / "dev_data" / "valve", tmp_path / "dev_data" / "valve")
    locked = tmp_path / "dev_data" / "valve" / "test"
    locked.chmod(0o000)
    try:
        done = subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "rcmae.cli", "index", "--data", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert done.returncode == EXIT.ok, done.stderr
    assert f"1 x folder cannot be read: {locked}" in done.stderr
    assert "90 clips, 1 skipped" in done.stdout


# ---------------------------------------------------------------- rcmae score: exit codes that mean what they say
@pytest.fixture
def model_copy(finetuned_model):
    """A fresh copy of the session's fine-tuned model, to damage."""
    import shutil

    def fresh(tmp_path: Path) -> Path:
        return Path(shutil.copytree(finetuned_model, tmp_path / "model"))
    return fresh


def valve_clips(toy_root: Path, count: int = 2) -> list[str]:
    return [str(p) for p in sorted((toy_root / "dev_data" / "valve" / "test").glob("*.wav"))[:count]]


def test_score_exit_codes_scored_anomaly_and_not_all_scored(model_copy, toy_root, tmp_path, capsys):
    model = model_copy(tmp_path)
    clips = valve_clips(toy_root, 24)
    code = main(["score", "--checkpoint", str(model), *clips])
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(rows) == 24 and code == (EXIT.anomaly_found if rows["decision"].any() else EXIT.ok)
    assert main(["score", "--checkpoint", str(model), clips[0], str(tmp_path / "gone.wav")]) == EXIT.not_all_scored
    assert "not scored: " in capsys.readouterr().err


def test_a_folder_given_to_score_stands_for_its_clips(model_copy, toy_root, tmp_path, capsys):
    import shutil

    model = model_copy(tmp_path)
    folder = tmp_path / "recordings"
    (folder / "valve" / "test").mkdir(parents=True)  # DCASE 2020 names the machine type by the folder
    for clip in valve_clips(toy_root, 3):
        shutil.copy(clip, folder / "valve" / "test")
    main(["score", "--checkpoint", str(model), str(folder)])
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert sorted(Path(f).name for f in rows["file"]) == sorted(Path(c).name for c in valve_clips(toy_root, 3))


def test_score_into_a_folder_is_one_line(model_copy, toy_root, tmp_path, capsys):
    model = model_copy(tmp_path)
    assert main(["score", "--checkpoint", str(model), "--out", str(tmp_path), *valve_clips(toy_root)]) == 2
    assert last_line(capsys) == f"rcmae score: error: --out {tmp_path} is a folder: name the CSV file to write"


def test_a_deleted_threshold_names_meta_json(model_copy, toy_root, tmp_path, capsys):
    model = model_copy(tmp_path)
    meta = json.loads((model / "meta.json").read_text())
    del meta["detector"]["thresholds"]["mahalanobis"]["valve/00"]
    (model / "meta.json").write_text(json.dumps(meta))
    assert main(["score", "--checkpoint", str(model), *valve_clips(toy_root)]) == EXIT.user_error
    line = last_line(capsys)
    assert f"{model / 'meta.json'}: decision thresholds missing for mahalanobis valve/00" in line


def test_a_detector_from_another_model_is_named(model_copy, toy_root, tmp_path, capsys):
    from rcmae.detect.detector import Detector
    from rcmae.detect.detector_files import load_detector, save_detector

    model = model_copy(tmp_path)
    detector = load_detector(model)
    fans = Detector({}, {})  # the fan IDs' parts only, every threshold kept
    for name in ("centroids", "gaussians", "patch_models", "neighbours"):
        setattr(fans, name, {k: v for k, v in getattr(detector, name).items() if k.startswith("fan")})
    fans.profiles = {name: {k: v for k, v in per_key.items() if k.startswith("fan")}
                     for name, per_key in detector.profiles.items()}
    fans.thresholds, fans.threshold_methods, fans.calibration = (detector.thresholds, detector.threshold_methods,
                                                                 detector.calibration)
    save_detector(model, fans)
    assert main(["score", "--checkpoint", str(model), *valve_clips(toy_root)]) == EXIT.user_error
    assert "not this model's detector" in last_line(capsys)


def _edit_meta(model: Path, edit) -> None:
    meta = json.loads((model / "meta.json").read_text())
    edit(meta)
    (model / "meta.json").write_text(json.dumps(meta))


def _edit_detector(model: Path, edit, keep_checksum: bool = False) -> None:
    """Edit detector.safetensors' arrays; without `keep_checksum` as a model from before checksums were recorded."""
    import safetensors.numpy

    arrays = safetensors.numpy.load_file(str(model / DETECTOR))
    edit(arrays)
    safetensors.numpy.save_file(arrays, str(model / DETECTOR))
    if not keep_checksum:
        _edit_meta(model, lambda meta: meta["checksums"].pop(DETECTOR))


def _edit_weights(model: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    weights["patch_embed.bias"][0] = float("nan")
    save_file(weights, str(model / "model.safetensors"))


def _set(path: list, value):
    def edit(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return edit


DAMAGED_MODELS = {  # what was done to the model folder -> (how, what the one line says)
    "depth edited": (lambda m: _edit_meta(m, _set(["config", "model", "depth"], 1)),
                     "meta.json: edited after training"),
    "n_frames edited": (lambda m: _edit_meta(m, _set(["config", "features", "n_frames"], lambda n: 2 * n)),
                        "meta.json: edited after training"),
    "normaliser cut short": (lambda m: _edit_meta(m, _set(["normalizer", "mean"], lambda v: v[:-3])),
                             "meta.json: edited after training"),
    "threshold abc": (lambda m: _edit_meta(m, _set(["detector", "thresholds", "mahalanobis", "valve/00"], "abc")),
                      "the mahalanobis threshold of valve/00 is 'abc', not a finite number"),
    "threshold NaN": (lambda m: _edit_meta(m, _set(["detector", "thresholds", "fused", "valve/02"], float("nan"))),
                      "the fused threshold of valve/02 is nan, not a finite number"),
    "weights replaced": (_edit_weights, "model.safetensors: damaged or replaced: its sha256 differs"),
    "detector array NaN": (lambda m: _edit_detector(m, lambda a: a["mean/valve/00"].__setitem__(0, np.nan), True),
                           "detector.safetensors: damaged or replaced: its sha256 differs"),
    # folders from before checksums were recorded: the values and shapes themselves are checked
    "detector NaN, no checksum": (lambda m: _edit_detector(m, lambda a: a["mean/valve/00"].__setitem__(0, np.nan)),
                                  "detector.safetensors: damaged: non-finite values in mean/valve/00"),
    "normaliser NaN, no checksum": (lambda m: _edit_meta(m, lambda meta: (
        meta["checksums"].pop("trained"), meta["normalizer"]["std"].__setitem__(3, float("nan")))),
        "meta.json: damaged: the normaliser's std is not 128 finite numbers above 0"),
    "detector array missing": (lambda m: _edit_detector(m, lambda a: a.pop("noise/valve/00")),
                               "detector.safetensors: damaged: no array 'noise/valve/00'"),
    "detector array mis-shaped": (lambda m: _edit_detector(m, lambda a: a.__setitem__(
        "stats_mean/valve/00", a["stats_mean/valve/00"][:-1].copy())),
        "detector.safetensors: stats_mean/valve/00 has shape"),
}


@pytest.mark.parametrize("case", list(DAMAGED_MODELS))
def test_a_damaged_model_is_one_line_naming_the_file_never_wrong_scores(case, model_copy, toy_root, tmp_path, capsys):
    model = model_copy(tmp_path)
    damage, expected = DAMAGED_MODELS[case]
    damage(model)
    assert main(["score", "--checkpoint", str(model), *valve_clips(toy_root)]) == EXIT.user_error
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith(f"rcmae score: error: {model}") and expected in line, line


def test_a_model_and_recordings_under_non_utf8_names_are_scored(model_copy, toy_root, tmp_path, capsys):
    import shutil

    model = Path(shutil.move(model_copy(tmp_path), os.fsdecode(bytes(tmp_path) + b"/model\xff")))
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/plant\xfe"))
    folder.mkdir()
    clip = valve_clips(toy_root, 1)[0]
    shutil.copy(clip, folder / os.fsdecode(b"pump\xfd.wav"))
    shutil.copy(clip, folder / "other.wav")
    assert main(["score", "--checkpoint", str(model), "--machine-type", "valve", "--machine-id", "0",
                 str(folder)]) in (EXIT.ok, EXIT.anomaly_found)
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert sorted(rows["file"]) == [f"{tmp_path}/plant\\xfe/other.wav", f"{tmp_path}/plant\\xfe/pump\\xfd.wav"]
    assert rows["score"].nunique() == 1  # one clip under two names


# ---------------------------------------------------------------- bounded inputs, full disks
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs) to fill: a real full disk, not a simulated error."""
    import subprocess

    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def serve_archive(name: str, data: bytes):
    import hashlib

    from rcmae.data.download import DataSet, Part
    from test_download import Server

    dataset = DataSet("toy", md5={name: hashlib.md5(data).hexdigest()},
                      parts={"dev": Part("1", "dev_data_{type}.zip", "dev_data", ("fan",))})
    return dataset, Server({name: data})


def zipped(members: dict[str, bytes], method: int) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_unpacking(tmp_path):
    import zipfile

    from rcmae.data.download import DownloadError, download

    bomb = zipped({"fan/train/normal_id_00_00000000.wav": bytes(300 * 2**20)}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 2**20
    dataset, server = serve_archive("dev_data_fan.zip", bomb)
    try:
        with pytest.raises(DownloadError, match="over 20 times its own size"):
            download(dataset, tmp_path / "data", ("dev",), ("fan",), base_url=server.url, progress=False)
    finally:
        server.close()
    assert not list((tmp_path / "data" / ".downloads").glob("*.unpacking"))
    assert not (tmp_path / "data" / "dev_data").exists()


def test_an_unpack_the_disk_has_no_room_for_is_one_line_naming_the_space(small_disk, capsys, monkeypatch):
    import zipfile

    from rcmae import cli
    from rcmae.data import download as download_module

    archive = zipped({"fan/train/normal_id_00_00000000.wav": np.random.default_rng(0).bytes(600 * 2**10)},
                     zipfile.ZIP_STORED)
    dataset, server = serve_archive("dev_data_fan.zip", archive)
    monkeypatch.setitem(download_module.DATASETS, "dcase2020", dataset)
    monkeypatch.setitem(cli.DOWNLOADABLE, "dcase2020", dataset)
    try:
        code = main(["data", "download", "dcase2020", "--out", str(small_disk), "--sets", "dev", "--types", "fan",
                     "--base-url", server.url, "--no-progress"])
    finally:
        server.close()
    assert code == EXIT.user_error
    line = last_line(capsys)
    assert line.startswith(f"rcmae data: error: {small_disk / '.downloads'}: 630.") and "KiB free" in line
    assert not list((small_disk / ".downloads").glob("*.unpacking"))


def test_evaluation_on_a_full_disk_is_one_line_and_leaves_no_partial_files(model_copy, toy_features, tmp_path,
                                                                            small_disk, capsys):
    model = model_copy(tmp_path)
    (small_disk / "filler").write_bytes(bytes(1024 * 1024 - 8192))  # leaves two pages
    out = small_disk / "evaluation"
    code = main(["evaluate", "--checkpoint", str(model), "--features", str(toy_features), "--out", str(out)])
    assert code == EXIT.user_error
    line = last_line(capsys)
    assert line.startswith("rcmae evaluate: error: ") and "No space left on device" in line
    assert not out.exists() or not any(out.iterdir())
    assert not list(small_disk.glob(".*.partial"))


# ---------------------------------------------------------------- rcmae's own local Ray: loopback, token auth
LOCAL_RAY = """
import sys, time
from rcmae.distributed.runtime import ensure_ray
ensure_ray(num_cpus=1)
import ray
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
print(ray._private.worker.global_worker.node.address_info["webui_url"], flush=True)
sys.stdin.readline()
"""


@pytest.mark.ray
def test_a_local_ray_that_rcmae_starts_listens_on_loopback_only_with_token_auth():
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    driver = subprocess.Popen([sys.executable, "-c", LOCAL_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        dashboard = driver.stdout.readline().strip()
        assert dashboard.startswith("127.0.0.1:")
        listeners, beyond = beyond_loopback(driver.pid)
        assert len(listeners) >= 8 and dashboard in listeners  # GCS, raylet, worker, dashboard, its agents, ...
        assert beyond == [], f"listening beyond loopback: {beyond}"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://{dashboard}/api/jobs/", timeout=10)
    finally:
        driver.stdin.write("\n")
        driver.stdin.flush()
        driver.wait(timeout=60)


TAKEN_PORT = """
import socket
import ray
from rcmae.distributed import runtime

taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
ports = iter([taken.getsockname()[1]])
free = runtime.dashboard_port
runtime.dashboard_port = lambda: next(ports, None) or free()  # the first pick is taken before Ray binds it
runtime.ensure_ray(num_cpus=1)
print(ray.get_runtime_context().gcs_address, taken.getsockname()[1], ray.worker.get_dashboard_url(), flush=True)
ray.shutdown()
"""


@pytest.mark.ray
def test_a_dashboard_port_taken_before_ray_binds_it_starts_the_instance_again_on_another():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", TAKEN_PORT], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    _, taken, dashboard = done.stdout.split()
    assert dashboard.startswith("127.0.0.1:") and not dashboard.endswith(f":{taken}")
    assert "the dashboard's port was taken before it could listen on it; starting again" in done.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_ray_train_on_a_local_instance_rendezvouses_on_loopback_and_ctrl_c_exits_130(toy_features, tmp_path):
    """Torch's TCPStore (rank 0's rendezvous) listens on every interface when Ray Train starts it; rcmae's local
    instance binds it to 127.0.0.1. Checked while two workers train; then Ctrl-C ends the command with 130."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "pretrain"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-m", "rcmae.cli", "pretrain", "--features", str(toy_features), "--out",
                               str(out), "--set", "pretrain.epochs=200", "--set", "scale.num_workers=2",
                               "--set", "pretrain.batch_size=16"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not list(out.glob("ray_results/pretrain/checkpoint_*")) and time.time() < deadline:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            time.sleep(0.5)
        listeners, beyond = beyond_loopback(driver.pid)
        assert listeners and beyond == [], f"listening beyond loopback while training: {beyond}"
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == EXIT.interrupted, stderr[-3000:]
    # the line itself, among what Ray's workers print as they stop
    assert "rcmae pretrain: interrupted (SIGINT); re-run the same command to continue" in stderr.splitlines(), stderr


@pytest.mark.parametrize("flag, value", [("--max-upload-mb", "nan"), ("--max-upload-mb", "inf"), ("--port", "99999"),
                                         ("--max-seconds", "nan"), ("--batch-wait-ms", "nan"), ("--port", "0"),
                                         ("--upload-timeout-s", "nan"), ("--upload-timeout-s", "0")])
def test_serve_flags_that_would_switch_a_limit_off_or_stall_are_usage_errors(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--checkpoint", str(tmp_path), flag, value])
    assert stopped.value.code == EXIT.user_error
    assert f"argument {flag}: " in capsys.readouterr().err


def test_training_on_a_full_disk_is_one_line_and_leaves_no_scratch(toy_features, tmp_path, small_disk, capsys):
    out = small_disk / "pretrain"
    code = main(["pretrain", "--features", str(toy_features), "--out", str(out), "--set", "pretrain.epochs=1",
                 "--set", "scale.num_workers=0"])
    assert code == EXIT.user_error
    line = last_line(capsys)
    assert line.startswith(f"rcmae pretrain: error: {out / 'checkpoints'}") and "No space left on device" in line
    assert not list(out.rglob("*.partial")) and not (out / "model").exists()


@pytest.mark.ray
def test_augmentation_on_a_full_disk_is_one_line(ray_session, toy_root, small_disk, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_root / "dev_data" / "valve", data / "dev_data" / "valve")
    code = main(["augment", "--data", str(data), "--out", str(small_disk / "augment"), "--augmenter", "specaugment",
                 "--variants", "1"])
    assert code == EXIT.user_error
    line = last_line(capsys)
    assert line == (f"rcmae augment: error: {small_disk / 'augment' / 'features'}: no space left on device while "
                    f"writing features (a re-run keeps the shards already written): free some space there, or point "
                    f"--out at a disk with room")


def test_an_unreadable_meta_json_is_one_line_naming_it(model_copy, toy_root, tmp_path):
    import subprocess
    import sys

    model = model_copy(tmp_path)
    (model / "meta.json").chmod(0o000)
    try:
        done = subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "rcmae.cli", "score", "--checkpoint", str(model),
                               *valve_clips(toy_root)], capture_output=True, text=True, timeout=300)
    finally:
        (model / "meta.json").chmod(0o644)
    assert done.returncode == EXIT.user_error, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"rcmae score: error: {model / 'meta.json'}: Permission denied"
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- long recordings: every second is heard
def test_window_starts_cover_a_recording_to_its_end():
    from rcmae.evaluate.recordings import window_starts

    assert window_starts(100, 40, 20) == [0, 20, 40, 60]
    assert window_starts(100, 40, 25) == [0, 25, 50, 60]
    assert window_starts(35, 40, 20) == [0]


def test_a_long_recording_is_scored_window_by_window(model_copy, toy_root, tmp_path, capsys):
    model = model_copy(tmp_path)
    folder = toy_root / "dev_data" / "valve" / "test"
    anomaly = folder / "anomaly_id_00_00000000.wav"
    normals = sorted(folder.glob("normal_id_00_*.wav"))[:2]
    wave = np.concatenate([sf.read(p)[0] for p in [anomaly, *normals]])  # 6 s: the fault in the first 2 s
    long = tmp_path / "valve" / "test" / "normal_id_00_99999999.wav"
    long.parent.mkdir(parents=True)
    sf.write(long, wave, 16000, subtype="PCM_16")
    windows = tmp_path / "windows.csv"
    main(["score", "--checkpoint", str(model), "--aggregate", "max", "--windows", str(windows), str(long),
          str(anomaly)])
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out)).set_index("file")
    per_window = pd.read_csv(windows)
    mine = per_window[per_window["file"] == str(long)]
    assert mine[["start_s", "end_s"]].values.tolist() == [[0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]
    assert rows.loc[str(long), "score"] == pytest.approx(mine["score"].max())
    # the first window is the anomalous clip itself, featurised and scored as when it is scored alone
    assert mine["score"].iloc[0] == pytest.approx(rows.loc[str(anomaly), "score"], rel=1e-5)
    main(["score", "--checkpoint", str(model), str(long)])  # the default: the mean
    mean = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))["score"][0]
    assert mean == pytest.approx(mine["score"].mean())


def test_the_cli_names_the_aggregates_of_the_scorer():
    from rcmae.cli import WINDOW_AGGREGATES
    from rcmae.evaluate.recordings import AGGREGATES

    assert set(WINDOW_AGGREGATES) == set(AGGREGATES)


def test_a_folder_from_before_a_field_existed_is_not_taken_for_other_settings(toy_features, quick_config, tmp_path):
    from rcmae import stages
    from rcmae.data.run_folder import SettingsChanged

    out = tmp_path / "pretrain"
    stages.pretrain(quick_config, toy_features, out)
    recorded = json.loads((out / stages.SETTINGS).read_text())
    del recorded["pretrain"]["schedule"]  # as an rcmae before `schedule` wrote it (it ran the cosine default)
    (out / stages.SETTINGS).write_text(json.dumps(recorded))
    assert stages.claim(out, stages.PRETRAIN, quick_config, force=False) is not None  # finished, same settings
    (out / stages.SETTINGS).write_text(json.dumps(recorded))
    with pytest.raises(SettingsChanged, match="schedule"):  # the paper's constant rate is a real change
        stages.claim(out, stages.PRETRAIN, quick_config.override({"pretrain.schedule": "constant",
                                                             "pretrain.warmup_epochs": 0}), force=False)
