"""Real-data situations on toy data: an unlabelled evaluation split beside a labelled one, and machines with
one or two train clips, in one run."""

import json
import shutil

import pytest

from dcase_files import read_scores
from rcmae.cli import main
from rcmae.data.synth import synthesize
from rcmae.evaluate.dcase_csv import score_file
from rcmae.evaluate.metrics import Metrics
from rcmae.evaluate.run_report import _metrics_table


@pytest.mark.slow
@pytest.mark.ray
def test_unlabelled_clips_and_few_shot_machines_are_scored_and_reported(ray_session, tmp_path, capsys):
    data = tmp_path / "data"
    synthesize(data, preset="small", types=("fan",), additional=True)
    train = data / "dev_data" / "fan" / "train"
    for machine_id, keep in (("00", 1), ("02", 1), ("04", 2)):  # new machines: one or two train clips
        for clip in sorted(train.glob(f"normal_id_{machine_id}_*.wav"))[keep:]:
            clip.unlink()
    unlabelled = data / "eval_data" / "fan" / "test"
    unlabelled.mkdir(parents=True)
    for number, clip in enumerate(sorted((data / "dev_data" / "fan" / "test").glob("*_id_00_*.wav"))[:6]):
        shutil.copy(clip, unlabelled / f"id_01_{number:08d}.wav")  # DCASE 2020 evaluation-set names
    args = ["run", "--data", str(data), "--out", str(tmp_path / "run"), "--no-baseline", "--set",
            "scale.num_workers=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1"]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()  # stdout carries the result only (progress: stderr)
    assert len(printed) == 1 and printed[0].startswith("mean AUC ") and printed[0].endswith("report.md"), printed
    evaluation = tmp_path / "run" / "evaluation"
    assert len(read_scores(score_file(evaluation, "fan", "01"))) == 6  # scored, as a submission needs
    for machine_id in ("00", "02", "04"):
        assert len(read_scores(score_file(evaluation, "fan", machine_id))) == 24
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert {r["machine_id"] for r in metrics["per_id"]} == {"00", "02", "04"}  # the labelled part only
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Unlabelled test clips" in report and "fan/01" in report
    assert "Few-shot machines" in report and "fan/00, fan/02, fan/04" in report


def test_a_wholly_unlabelled_split_gets_a_report_table_that_says_so():
    text = _metrics_table({"RC-MAE": Metrics()})
    assert "unlabelled (evaluation mode)" in text and "anomaly_score_" in text


@pytest.mark.slow
@pytest.mark.ray
def test_a_dcase2021_layout_gets_section_csvs_and_per_domain_scores(ray_session, tmp_path):
    data = tmp_path / "data"
    synthesize(data, preset="small", types=("fan", "valve"), layout="dcase2021")
    args = ["run", "--data", str(data), "--out", str(tmp_path / "run"), "--no-baseline", "--set",
            "scale.num_workers=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1"]
    assert main(args) == 0
    evaluation = tmp_path / "run" / "evaluation"
    for machine_type in ("fan", "valve"):
        for section in ("00", "01", "02"):
            scores = read_scores(evaluation / f"anomaly_score_{machine_type}_section_{section}_test.csv")
            assert len(scores) == 24 and all(name.startswith(f"section_{section}_") for name in scores)
            assert (evaluation / f"decision_result_{machine_type}_section_{section}_test.csv").exists()
    assert not list(evaluation.glob("*_id_*.csv"))
    domains = json.loads((evaluation / "metrics.json").read_text())["domains"]
    assert len(domains["per_section"]) == 6
    assert all({"auc_source", "auc_target", "pauc"} <= set(row) for row in domains["per_section"])
    assert set(domains["per_type"]) == {"fan", "valve"} and 0 < domains["mean"]["hmean"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Domain shift (DCASE 2021-2025 scores)" in report and f"{domains['mean']['hmean']:.3f}" in report


@pytest.mark.slow
@pytest.mark.ray
def test_a_dcase2023_layout_trains_stage_2_on_the_attributes_in_its_file_names(ray_session, tmp_path):
    """One section per type: machine IDs would give stage 2 one class, and the paper's score the same value for
    every clip (AUC exactly 0.5); the attribute classes give it something to tell apart."""
    from rcmae.models.checkpoint import read_meta

    data = tmp_path / "data"
    synthesize(data, preset="small", types=("valve",), layout="dcase2023")
    args = ["run", "--data", str(data), "--out", str(tmp_path / "run"), "--no-baseline", "--set",
            "scale.num_workers=0", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=2"]
    assert main(args) == 0
    classes = read_meta(tmp_path / "run" / "finetune" / "model").classes
    assert classes == [f"valve/00/mode_{m}{shifted}" for m in (0, 2, 4) for shifted in ("", "_shifted")]
    evaluation = tmp_path / "run" / "evaluation"
    paper_score = json.loads((evaluation / "other_methods" / "id_logprob" / "metrics.json").read_text())
    assert paper_score["mean"]["auc"] != 0.5
    scores = read_scores(evaluation / "anomaly_score_valve_section_00_test.csv")
    assert len(scores) == 3 * 24 and len(set(scores.values())) > 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Stage 2 classified 6 attribute classes (type/section/attributes, from the file names) of 1" in report
    # the API reads the attributes from the file name as the evaluation did
    from rcmae import Detector

    paper = read_scores(evaluation / "other_methods" / "id_logprob" / "anomaly_score_valve_section_00_test.csv")
    detector = Detector.load(tmp_path / "run" / "finetune" / "model", method="id_logprob")
    for name in ("section_00_source_test_anomaly_0000_mode_0.wav",
                 "section_00_target_test_normal_0007_mode_2_shifted.wav"):
        scored = detector.score_file(data / "dev_data" / "valve" / "test" / name)
        assert scored.score == pytest.approx(paper[name], rel=1e-4, abs=1e-5)
