"""The floor reference and results per fault family, against hand computations and sklearn."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcmae.data.sound_models import FAULT_KINDS, MACHINES, TIMING_RICH_FAULTS
from rcmae.detect.floor import clip_statistics, fit_floor, floor_scores
from rcmae.detect.shrunk import SHRINKAGE, ShrunkGaussian
from rcmae.evaluate.families import family_metrics, fault_families
from rcmae.evaluate.results import write_evaluation


def test_clip_statistics_are_each_bands_mean_then_std_over_time():
    specs = np.array([[[1.0, 3.0], [2.0, 2.0]]])  # one clip, 2 bands, 2 frames
    np.testing.assert_allclose(clip_statistics(specs), [[2.0, 2.0, 1.0, 0.0]])


def test_the_floor_gaussian_is_a_shrunk_mahalanobis_distance():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 4)) * [1.0, 2.0, 0.5, 1.0]
    gaussian = ShrunkGaussian.fit(train)
    covariance = np.cov(train, rowvar=False)
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / 4 * np.eye(4)
    probe = rng.normal(size=(3, 4))
    centred = probe - train.mean(axis=0)
    expected = [c @ np.linalg.solve(shrunk, c) for c in centred]
    np.testing.assert_allclose(gaussian.score(probe), expected, rtol=1e-9)


def test_the_floor_is_finite_on_identical_clips_and_sees_a_level_change():
    specs = np.tile(np.linspace(0, 1, 16).reshape(1, 4, 4), (5, 1, 1))
    gaussians = fit_floor(specs, ["m/00"] * 5)
    scores = floor_scores(gaussians, np.concatenate([specs[:1], specs[:1] + 0.5]), ["m/00", "m/00"])
    assert np.isfinite(scores).all() and scores[1] > scores[0]


def test_every_fault_family_has_a_kind():
    drawn = {family for machine in MACHINES.values() for family in machine["faults"]}
    hard_only = {family for families in TIMING_RICH_FAULTS.values() for family in families}
    assert drawn | hard_only == set(FAULT_KINDS) and FAULT_KINDS.keys() - drawn == hard_only
    assert set(FAULT_KINDS.values()) == {"timing", "added-sound"}


def rows_of(labels, families, machine_id="00"):
    return [dict(path=f"/data/fan/test/{i}_{machine_id}.wav", file_name=f"{i}_{machine_id}.wav", machine_type="fan",
                 machine_id=machine_id, label=label, domain="source") for i, label in enumerate(labels)], {
        f"/data/fan/test/{i}_{machine_id}.wav": family for i, family in enumerate(families) if family}


def test_family_results_are_each_familys_anomalies_against_the_ids_normals():
    labels = ["normal"] * 4 + ["anomaly"] * 4
    families = [None] * 4 + ["imbalance", "imbalance", "bearing_damage", "bearing_damage"]
    rows, by_path = rows_of(labels, families)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.15, 0.35, 0.9, 0.8])
    found = family_metrics(rows, scores, by_path)
    per = {r["family"]: r for r in found["per_family"]}
    assert per["imbalance"]["auc"] == pytest.approx(roc_auc_score([0] * 4 + [1] * 2, [0.1, 0.2, 0.3, 0.4, 0.15, 0.35]))
    assert per["bearing_damage"]["auc"] == 1.0 and per["imbalance"]["kind"] == "timing"
    assert found["per_kind"]["timing"]["auc"] == per["imbalance"]["auc"]
    assert found["per_kind"]["added-sound"] == dict(auc=1.0, pauc=per["bearing_damage"]["pauc"], families=1)


def test_metrics_json_carries_families_and_the_manifest_names_them(tmp_path):
    from rcmae.data.synth import synthesize

    synthesize(tmp_path / "toy", preset="small", seed=0, types=("valve",))
    families = fault_families(tmp_path / "toy" / "dev_data" / "valve")  # found above a sub-folder
    anomalies = sorted((tmp_path / "toy" / "dev_data" / "valve" / "test").glob("anomaly_*.wav"))
    assert len(families) == len(anomalies) and all(str(p.resolve()) in families for p in anomalies)
    assert fault_families(tmp_path) == {}  # no manifest: real recordings
    labels = ["normal"] * 3 + ["anomaly"] * 3
    rows, by_path = rows_of(labels, [None] * 3 + ["rattle"] * 3)
    metrics = write_evaluation(tmp_path / "out", rows, np.arange(6.0), np.zeros(6, int), families=by_path)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["families"] == metrics.families and on_disk["families"]["per_family"][0]["auc"] == 1.0
