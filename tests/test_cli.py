"""The `rcmae` command line, driven through `main([...])` as a user types it."""

import json
import re

import pytest

from rcmae.cli import main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    listed = re.findall(r"^    (\w+)\s", shown, re.M)  # the subcommand lines of argparse's list
    assert listed == ["synth", "data", "index", "config", "augment", "pretrain", "finetune", "evaluate", "score",
                      "export", "serve", "baseline", "tune", "ablate", "run"]


def test_config_writes_a_yaml_that_loads_back(tmp_path, capsys):
    out = tmp_path / "c.yaml"
    assert main(["config", "--preset", "tiny", "--set", "pretrain.epochs=3", "--out", str(out)]) == 0
    assert main(["config", "--config", str(out)]) == 0
    assert "epochs: 3" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["config", "--set", "pretrain.epochs=5.5"], "pretrain.epochs: 5.5 is not a valid int"),
    (["config", "--set", "pretrain.nope=1"], "unknown config key 'pretrain.nope'"),
    (["config", "--set", "no_equals_sign"], "SECTION.KEY=VALUE"),
    (["index", "--data", "/no/such/folder"], "does not exist"),
])
def test_bad_input_is_one_line_naming_it_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("rcmae ")]  # (Ray may log beside it)
    assert len(ours) == 1 and message in ours[0] and "Traceback" not in err


def test_synth_then_index(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--types", "fan,valve"]) == 0
    shown = capsys.readouterr()
    assert "wrote" in shown.out and "synth: dev_data fan id_00 done" in shown.err  # result: stdout; progress: stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["preset"] == "small" and set(manifest["machines"]) == {"fan", "valve"}
    assert {path.name for path in (tmp_path / "dev_data").iterdir()} == {"fan", "valve"}
    assert main(["index", "--data", str(tmp_path)]) == 0
    assert f"{len(manifest['clips'])} clips" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["augment", "--data", "d", "--out", "o", "--limit", "0"], "0 is below 1"),
    (["augment", "--data", "d", "--out", "o", "--limit", "-3"], "-3 is below 1"),
    (["augment", "--data", "d", "--out", "o", "--variants", "two"], "'two' is not a whole number"),
    (["synth", "--out", "o", "--seed", "-1"], "-1 is below 0"),
    (["run", "--synth-types", "valve,bogus"], "'valve,bogus': machine types of the toy factory are fan, pump, "
                                              "slider, valve, ToyCar, ToyConveyor"),
    (["run", "--out", "hdfs://name/run"], "hdfs://name/run: rcmae reads and writes s3://, gs://, file:// URIs"),
    (["augment", "--data", "s3://b/data", "--out", "o"], "s3://b/data: object-store URIs are taken by the run "
                                                         "folders (--out) of run, augment, pretrain"),
])
def test_numeric_options_and_paths_are_validated_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_log_level_is_taken_before_or_after_the_command():
    from rcmae.cli import build_parser

    assert build_parser().parse_args(["--log-level", "error", "config"]).log_level == "error"
    assert build_parser().parse_args(["config", "--log-level", "error"]).log_level == "error"  # as jobs/*.py pass it
    assert build_parser().parse_args(["config"]).log_level == "info"


def test_log_level_chooses_what_reaches_stderr(capsys):
    import logging

    from rcmae.logs import configure

    log = logging.getLogger("rcmae.some.module")
    try:
        configure("warning")
        log.info("progress line")
        log.warning("a warning")
        err = capsys.readouterr().err
        assert "a warning" in err and "progress line" not in err
        configure("info")
        log.info("progress line")
        assert capsys.readouterr().err.count("progress line") == 1  # one handler, however often configured
    finally:
        configure("info")


def test_a_steps_pace_is_a_rate_or_below_one_a_second_the_time_each_took():
    from rcmae.run import pace

    assert pace(162, 9.0, "clips") == "18.0 clips/s"
    assert pace(1, 24.0, "epochs") == "24.0 s each"
    assert pace(0, 3.0, "clips") == "0.0 clips/s"
