import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dcase_files import read_scores
from rcmae.baseline import run_reference, train_type_model
from rcmae.evaluate.dcase_csv import score_file
from rcmae.evaluate.test_split import data_test_split
from rcmae.models.dcase_ae import DenseAE


def test_dense_ae_is_the_dcase_2020_architecture():
    model = DenseAE()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == (
        [(640, 128)] + [(128, 128)] * 3 + [(128, 8), (8, 128)] + [(128, 128)] * 3 + [(128, 640)])


def test_stack_frames_joins_consecutive_frames():
    model = DenseAE(n_mels=2, frames=3)
    specs = torch.arange(12.0).reshape(1, 2, 6)  # mel rows [0..5], [6..11]
    vectors = model.stack_frames(specs)
    assert vectors.shape == (1, 4, 6)
    assert vectors[0, 1].tolist() == [1.0, 7.0, 2.0, 8.0, 3.0, 9.0]  # frames 1, 2, 3, each (mel0, mel1)


def test_training_lowers_reconstruction_error(quick_config):
    specs = np.random.default_rng(0).normal(size=(16, 128, 64)).astype(np.float32)
    vectors = DenseAE().stack_frames(torch.from_numpy(specs)).reshape(-1, 640)
    torch.manual_seed(0)
    before = DenseAE()  # the initial weights train_type_model starts from
    after = train_type_model(specs, quick_config.override({"baseline.epochs": 3}).baseline, seed=0)
    before.eval(), after.eval()
    with torch.no_grad():
        assert after.loss(vectors) < before.loss(vectors)


@pytest.mark.parametrize("reference", ["dcase2020_ae", "floor"])
def test_a_reference_writes_dcase_files_that_reproduce_its_metrics(reference, toy_root, toy_features, quick_config,
                                                                   tmp_path):
    from rcmae.evaluate.families import fault_families

    config = quick_config.override({"baseline.epochs": 2})
    data = toy_root / "dev_data" / "valve"
    metrics = run_reference(reference, config.baseline, config.score, toy_features,
                            lambda machine_type: data_test_split(data, config.audio, config.features, machine_type),
                            tmp_path, fault_families(data))
    assert metrics.method == reference and {r["machine_id"] for r in metrics.per_id} == {"00", "02", "04"}
    for row in metrics.per_id:
        scores = read_scores(score_file(tmp_path, "valve", row["machine_id"]))
        labels = [name.startswith("anomaly") for name in scores]
        assert len(scores) == row["n_normal"] + row["n_anomaly"]
        assert row["auc"] == pytest.approx(roc_auc_score(labels, list(scores.values())))
    assert {r["family"] for r in metrics.families["per_family"]} <= {"missing_clicks", "extra_clicks",
                                                                       "contamination"}


def fit_loudness(train: np.ndarray, keys: list[str], config, seed: int):
    """A reference for the test below: how far a clip's mean log-mel level is from its ID's."""
    levels, keys_array = train.mean(axis=(1, 2)), np.array(keys)
    means = {key: levels[keys_array == key].mean() for key in set(keys)}
    return lambda specs, keys: np.abs(specs.mean(axis=(1, 2)) - np.array([means[k] for k in keys]))


def test_a_registered_reference_is_one_entry_the_cli_and_the_fitting_read(monkeypatch, toy_root, toy_features,
                                                                         quick_config, tmp_path):
    from rcmae import registry
    from rcmae.cli import build_parser

    monkeypatch.setitem(registry.REFERENCES, "loudness", registry.Reference(
        "loudness", f"{__name__}:fit_loudness", True, "mean log-mel level", "loudness", "loudness: mean level",
        optional=True))
    assert build_parser().parse_args(["baseline", "--reference", "loudness", "--features", "f", "--data", "d",
                                      "--out", "o"]).reference == "loudness"
    data = toy_root / "dev_data" / "valve"
    metrics = run_reference("loudness", quick_config.baseline, quick_config.score, toy_features,
                            lambda machine_type: data_test_split(data, quick_config.audio, quick_config.features,
                                                                 machine_type), tmp_path)
    assert metrics.method == "loudness" and {r["machine_id"] for r in metrics.per_id} == {"00", "02", "04"}
    for row in metrics.per_id:
        scores = read_scores(score_file(tmp_path, "valve", row["machine_id"]))
        assert row["auc"] == pytest.approx(roc_auc_score([n.startswith("anomaly") for n in scores],
                                                         list(scores.values())))
