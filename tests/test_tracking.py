"""TensorBoard event files, read back with TensorBoard's own reader: both stages' loss terms under the paper's
equation numbers, one step per epoch, a resumed stage going on at its next epoch, and the final per-type metrics."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rcmae import stages, tracking


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_both_stages_and_the_evaluation_write_their_curves(toy_features, quick_config, tmp_path):
    from rcmae.evaluate.results import evaluate_checkpoint
    from rcmae.models.checkpoint import read_meta

    first = quick_config.override({"pretrain.epochs": 1})
    stages.pretrain(first, toy_features, tmp_path / "pretrain")
    pretrained = stages.pretrain(quick_config, toy_features, tmp_path / "pretrain")  # resumed: epoch 2 only
    model = stages.finetune(quick_config, toy_features, pretrained, tmp_path / "finetune")
    stage1, stage2 = (scalars(tmp_path / name / tracking.FOLDER) for name in ("pretrain", "finetune"))
    assert {"pretrain/loss_eq8", "pretrain/contrastive_eq3", "pretrain/vcr_eq7", "pretrain/mae_eq2", "pretrain/lr",
            "pretrain/samples_per_second", "pretrain/z_std"} <= set(stage1)
    assert {"finetune/loss_eq10", "finetune/supcon_eq9", "finetune/ce", "finetune/accuracy"} <= set(stage2)
    history = read_meta(pretrained).history
    assert [step for step, _ in stage1["pretrain/loss_eq8"]] == [1, 2]
    assert [value for _, value in stage1["pretrain/loss_eq8"]] == pytest.approx([h["loss"] for h in history])
    assert [step for step, _ in stage2["finetune/loss_eq10"]] == [1, 2]
    metrics = evaluate_checkpoint(model, None, tmp_path / "evaluation", features_dir=toy_features)
    final = scalars(tmp_path / "evaluation" / tracking.FOLDER)
    assert final["evaluation/auc/mean"] == [(0, pytest.approx(metrics["mean"]["auc"]))]
    for machine_type, values in metrics["per_type"].items():
        assert final[f"evaluation/pauc/{machine_type}"] == [(0, pytest.approx(values["pauc"]))]


def test_a_term_without_an_equation_keeps_its_name():
    assert tracking.tag("finetune", "ce") == "finetune/ce" and tracking.tag("pretrain", "vcr") == "pretrain/vcr_eq7"
