import json

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from dcase_files import read_scores
from encoded_values import encoded
from rcmae.data.classes import ClipClasses
from rcmae.detect.calibration import fit_detector
from rcmae.detect.detector import Detector, anomaly_scores, fit_gaussian, fit_scorer
from rcmae.detect.thresholds import gamma_threshold
from rcmae.errors import DataError
from rcmae.evaluate.dcase_csv import decision_file, score_file
from rcmae.evaluate.metrics import (
    Metrics,
    id_metrics,
    pauc_eq12,
    section_domain_metrics,
    summarize,
    summarize_domains,
)
from rcmae.evaluate.results import write_evaluation
from rcmae.sections import ScoreConfig


def test_auc_and_pauc_equal_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 200)
        scores = rng.normal(size=200) + labels * rng.uniform(0, 2)
        got = id_metrics(labels, scores, max_fpr=0.1)
        assert got["auc"] == pytest.approx(roc_auc_score(labels, scores))
        assert got["pauc"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1))


def test_eq12_hand_computed():
    # 10 normals -> floor(0.1 * 10) = 1 top normal (score 0.9); anomalies 0.95, 0.5, 0.9 (tie counts 1/2)
    labels = np.array([0] * 10 + [1] * 3)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.5, 0.9])
    assert pauc_eq12(labels, scores, 0.1) == pytest.approx((1 + 0 + 0.5) / 3)
    assert pauc_eq12(labels[:9].tolist() + [1], scores[:10], 0.1) is None  # 9 normals: floor(0.9) = 0
    row = id_metrics(np.array([0] * 9 + [1]), scores[:10], 0.1)
    assert row["pauc_eq12"] is None and "at least 10 normal clips" in row["note"]
    assert row["pauc"] == pytest.approx(roc_auc_score([0] * 9 + [1], scores[:10], max_fpr=0.1))


def test_summary_means_per_type_then_over_types():
    per_id = [dict(machine_type="fan", machine_id="00", auc=0.6, pauc=0.5),
              dict(machine_type="fan", machine_id="02", auc=0.8, pauc=0.7),
              dict(machine_type="pump", machine_id="00", auc=1.0, pauc=0.9)]
    summary = summarize(per_id)
    assert summary.per_type["fan"] == {"auc": pytest.approx(0.7), "pauc": pytest.approx(0.6)}
    assert summary.mean["auc"] == pytest.approx((0.7 + 1.0) / 2)


def test_an_id_whose_test_clips_are_all_one_kind_is_listed_with_the_reason_not_dropped_silently(tmp_path):
    rows = [dict(machine_type="fan", machine_id="00", label=label, file_name=f"{label}_{i}.wav")
            for i, label in enumerate(["normal", "anomaly"] * 3)]
    rows += [dict(machine_type="pump", machine_id="02", label="anomaly", file_name=f"anomaly_{i}.wav")
             for i in range(4)]
    metrics = write_evaluation(tmp_path, rows, np.arange(10.0), np.zeros(10, int),
                               expected=["fan/00", "pump/02", "valve/04"])
    assert [r["machine_type"] for r in metrics.per_id] == ["fan"] and list(metrics.per_type) == ["fan"]
    assert metrics.not_evaluated == [
        dict(machine_type="pump", machine_id="02", reason="its 4 test clip(s) are all anomalous: AUC and pAUC need "
                                                          "both kinds"),
        dict(machine_type="valve", machine_id="04", reason="no test clips")]
    assert json.loads((tmp_path / "metrics.json").read_text())["not_evaluated"] == metrics.not_evaluated


def test_csvs_read_back_to_the_same_scores_and_metrics_reproduce(tmp_path):
    rng = np.random.default_rng(1)
    rows, scores = [], []
    for machine_type, machine_id in [("fan", "00"), ("valve", "04")]:
        for i in range(20):
            label = "anomaly" if i % 3 == 0 else "normal"
            rows.append(dict(machine_type=machine_type, machine_id=machine_id, label=label,
                             file_name=f"{label}_id_{machine_id}_{i:08d}.wav"))
            scores.append(rng.normal() + (label == "anomaly"))
    scores = np.array(scores)
    metrics = write_evaluation(tmp_path, rows, scores, (scores > 0.5).astype(int))
    for machine_type, machine_id in [("fan", "00"), ("valve", "04")]:
        read = read_scores(score_file(tmp_path, machine_type, machine_id))
        expected = {r["file_name"]: s for r, s in zip(rows, scores) if r["machine_id"] == machine_id}
        assert read == expected
        labels = [name.startswith("anomaly") for name in read]
        recomputed = roc_auc_score(labels, list(read.values()))
        row = next(r for r in metrics.per_id if r["machine_id"] == machine_id)
        assert row["auc"] == pytest.approx(recomputed)
        decisions = decision_file(tmp_path, machine_type, machine_id).read_text().splitlines()
        assert all(line.split(",")[1] in ("0", "1") for line in decisions) and len(decisions) == 20
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert set(on_disk) >= {"per_id", "per_type", "mean"}
    assert set(on_disk["per_id"][0]) >= {"machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomaly"}


def test_gamma_threshold_sits_at_the_percentile():
    scores = np.random.default_rng(2).gamma(3.0, 2.0, 5000)
    threshold = gamma_threshold(scores, 0.9).value
    assert np.mean(scores <= threshold) == pytest.approx(0.9, abs=0.02)


def test_score_methods_against_hand_computation():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 6)) * np.array([3.0, 1.0, 1.0, 0.5, 0.2, 0.2])
    keys = ["a/00"] * 20 + ["a/01"] * 20
    units = train / np.linalg.norm(train, axis=1, keepdims=True)
    detector = fit_scorer(encoded(train, units), keys, ScoreConfig(components=3))
    test = rng.normal(size=(4, 6))
    test_keys = ["a/00", "a/01", "a/01", "a/00"]
    test_clips = ClipClasses.of_machines(["a/00", "a/01"], test_keys)
    found = anomaly_scores("mahalanobis", encoded(test), test_keys, test_clips, detector)
    # the same Gaussian as sklearn's probabilistic PCA: -2 log-likelihood = Mahalanobis + a per-ID constant
    pca = PCA(n_components=3).fit(train[:20])
    expected = -2 * pca.score_samples(test[[0, 3]])
    assert found[0] - found[3] == pytest.approx(expected[0] - expected[1], rel=1e-6)
    covariance = pca.get_covariance()
    centred = test[0] - train[:20].mean(axis=0)
    assert found[0] == pytest.approx(centred @ np.linalg.solve(covariance, centred), rel=1e-6)
    centroid = units[:20].mean(axis=0) / np.linalg.norm(units[:20].mean(axis=0))
    probe = rng.normal(size=(1, 6))
    cosine = anomaly_scores("embedding", encoded(probe, probe), ["a/00"], test_clips.select(np.array([0])), detector)
    assert cosine[0] == pytest.approx(1 - probe[0] @ centroid, rel=1e-5)
    log_probs = np.log(np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5], [0.2, 0.8]]))
    paper = anomaly_scores("id_logprob", encoded(test, log_probs=log_probs), test_keys, test_clips, detector)
    np.testing.assert_allclose(paper, -np.log([0.9, 0.7, 0.5, 0.2]))
    with pytest.raises(DataError, match="not seen in training"):
        anomaly_scores("mahalanobis", encoded(test), ["b/00"] * 4, ClipClasses.as_machine(["a/00", "a/01"], "b/00", 4),
                       detector)
    restored = Detector.from_arrays(detector.arrays(), detector.meta())
    np.testing.assert_allclose(anomaly_scores("mahalanobis", encoded(test), test_keys, test_clips, restored),
                               found, rtol=1e-5)


def test_a_gaussian_needs_three_clips():
    with pytest.raises(ValueError, match="at least 3 train clips"):
        fit_gaussian(np.zeros((2, 4)), 16)


def test_mahalanobis_sees_a_shift_along_a_quiet_direction():
    """The reason it is the default: normal clips vary a lot along nuisance directions (level, background)
    and a fault moves them along a quiet one; cosine distance to the centroid misses that, Mahalanobis not."""
    rng = np.random.default_rng(1)
    scale = np.array([5.0, 5.0, 0.1, 0.1])
    offset = np.array([10.0, 0, 0, 0])
    train = rng.normal(size=(200, 4)) * scale + offset
    detector = fit_scorer(encoded(train, train), ["m/00"] * 200, ScoreConfig(components=2))
    normal = rng.normal(size=(100, 4)) * scale + offset
    test = np.concatenate([normal, normal + np.array([0, 0, 2.0, 0])])
    labels = [0] * 100 + [1] * 100
    def score(method):
        clips = ClipClasses.as_machine(["m/00"], "m/00", 200)
        return roc_auc_score(labels, anomaly_scores(method, encoded(test, test), ["m/00"] * 200, clips, detector))
    assert score("mahalanobis") > 0.95 and score("embedding") < 0.6


@pytest.mark.parametrize("few_clips", [1, 2])
def test_few_shot_ids_borrow_their_types_covariance_and_thresholds(few_clips):
    rng = np.random.default_rng(0)
    counts = {"a/00": few_clips, "a/01": 20, "a/02": 20}
    centres = {key: rng.normal(size=6) * 3 for key in counts}
    keys = [key for key, n in counts.items() for _ in range(n)]
    pooled = np.stack([centres[k] + rng.normal(size=6) for k in keys])
    log_probs = np.log(rng.dirichlet(np.ones(3), size=len(keys)))
    detector = fit_detector(encoded(pooled, pooled, log_probs), keys, ClipClasses.of_machines(sorted(counts), keys),
                            ScoreConfig(components=2))
    assert detector.few_shot == ["a/00"]
    np.testing.assert_allclose(detector.gaussians["a/00"]["mean"], pooled[:few_clips].mean(axis=0))
    assert all(np.isfinite(detector.thresholds[m]["a/00"]) for m in detector.thresholds)
    probe = np.stack([centres["a/00"] + rng.normal(size=6) for _ in range(50)] + [centres["a/00"] + 6.0] * 50)
    scores = anomaly_scores("mahalanobis", encoded(probe, probe), ["a/00"] * 100,
                            ClipClasses.as_machine(sorted(counts), "a/00", 100), detector)
    assert roc_auc_score([0] * 50 + [1] * 50, scores) > 0.95
    restored = Detector.from_bytes(detector.to_bytes())  # as Ray's per-type fits come back to the driver
    assert restored.few_shot == ["a/00"] and restored.thresholds == detector.thresholds
    for key, gaussian in detector.gaussians.items():
        for part, value in gaussian.items():
            np.testing.assert_allclose(restored.gaussians[key][part], value, rtol=1e-6, err_msg=f"{key} {part}")


def test_a_machine_type_with_too_few_clips_in_all_is_refused_by_name():
    keys = ["b/00", "b/01"]
    with pytest.raises(DataError, match="machine type 'b' has 2 train clip"):
        fit_detector(encoded(np.eye(2, 4), np.eye(2, 4)), keys, ClipClasses.of_machines(keys, keys), ScoreConfig())


def test_per_domain_scores_follow_the_dcase_2021_to_2025_evaluators():
    labels = np.array([0, 0, 0, 0, 1, 1])
    domains = np.array(["source", "source", "target", "target", "source", "target"])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.9])
    row = section_domain_metrics(labels, scores, domains, max_fpr=0.1)
    assert row["auc_source"] == 1.0  # both source normals below both anomalies
    assert row["auc_target"] == 0.75  # 0.8 beats the 0.5 anomaly: 3 of 4 pairs ranked right
    assert row["pauc"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1))  # over the whole section
    summary = summarize_domains([dict(machine_type="fan", machine_id="00", **row)])
    assert summary.official == pytest.approx(3 / (1 / 1.0 + 1 / 0.75 + 1 / row["pauc"]))


def dcase2021_evaluator(labels, scores, domains):
    """DCASE 2021's evaluator's formula, restated: per domain, AUC and pAUC (max FPR 0.1) over that domain's clips;
    the score is the harmonic mean of all of them."""
    values = []
    for domain in ("source", "target"):
        keep = domains == domain
        values += [roc_auc_score(labels[keep], scores[keep]), roc_auc_score(labels[keep], scores[keep], max_fpr=0.1)]
    return values, len(values) / sum(1 / v for v in values)


def test_dcase_2021_test_folders_are_scored_by_that_year_s_evaluator(tmp_path):
    rng = np.random.default_rng(4)
    domains = np.array(["source"] * 14 + ["target"] * 14)
    labels = np.tile(np.r_[np.zeros(10, int), np.ones(4, int)], 2)
    scores = rng.normal(size=28) + labels * 0.8
    rows = [dict(machine_type="fan", machine_id="03", label=("normal", "anomaly")[y], domain=d,
                 path=f"/data/fan/{d}_test/section_03_{d}_test_{('normal', 'anomaly')[y]}_{i:04d}.wav",
                 file_name=f"section_03_{d}_test_{('normal', 'anomaly')[y]}_{i:04d}.wav")
            for i, (y, d) in enumerate(zip(labels, domains))]
    metrics = write_evaluation(tmp_path, rows, scores, np.zeros(28, int))
    section = metrics.domains.per_section[0]
    expected, official = dcase2021_evaluator(labels, scores, domains)
    assert metrics.domains.rule == "dcase2021" and "pauc" not in section
    assert [section[k] for k in ("auc_source", "pauc_source", "auc_target", "pauc_target")] == pytest.approx(expected)
    assert metrics.domains.official == pytest.approx(official)
    for row in rows:  # the same clips in test/ folders: the 2022-2025 rule
        row["path"] = row["path"].replace(f"/{row['domain']}_test/", "/test/")
    later = write_evaluation(tmp_path / "later", rows, scores, np.zeros(28, int)).domains
    assert later.rule == "dcase2022" and later.per_section[0]["pauc"] == pytest.approx(roc_auc_score(
        labels, scores, max_fpr=0.1))


def test_sectioned_files_get_the_dcase_2021_to_2025_csv_names_and_domain_metrics(tmp_path):
    clips = [(d, "normal", 0.1 * (i + 1)) for d in ("source", "target") for i in range(6)]
    clips += [("source", "anomaly", 0.9), ("target", "anomaly", 0.95)]
    rows = [dict(machine_type="fan", machine_id="00", file_name=f"section_00_{d}_test_{label}_{i:04d}.wav",
                 label=label, domain=d) for i, (d, label, _) in enumerate(clips)]
    metrics = write_evaluation(tmp_path, rows, np.array([c[2] for c in clips]), np.zeros(len(clips), int))
    written = read_scores(tmp_path / "anomaly_score_fan_section_00_test.csv")
    assert written["section_00_source_test_normal_0000.wav"] == pytest.approx(0.1)
    assert (tmp_path / "decision_result_fan_section_00_test.csv").exists()
    assert not list(tmp_path.glob("*_id_*.csv"))
    section = metrics.domains.per_section[0]
    assert section["auc_source"] == 1.0 and section["auc_target"] == 1.0 and metrics.domains.official == 1.0
    assert Metrics.from_json(json.loads(json.dumps(metrics.to_json()))) == metrics  # as metrics.json holds it


def test_the_gaussian_fit_is_the_same_every_time_for_wide_features():
    features = np.random.default_rng(0).normal(size=(40, 768))  # wide: sklearn's "auto" would go randomized
    first, second = fit_gaussian(features, 16), fit_gaussian(features, 16)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_decisions_get_precision_recall_and_f1_as_sklearn_computes_them(tmp_path):
    from sklearn.metrics import f1_score, precision_score, recall_score

    from rcmae.evaluate.run_report import _metrics_table

    labels = ["normal"] * 6 + ["anomaly"] * 4
    decisions = np.array([0, 0, 1, 0, 0, 0, 1, 1, 0, 1])
    rows = [dict(machine_type="fan", machine_id="00", file_name=f"{label}_id_00_{i:08d}.wav", label=label)
            for i, label in enumerate(labels)]
    metrics = write_evaluation(tmp_path, rows, np.linspace(0, 1, 10), decisions)
    truth = np.array([label == "anomaly" for label in labels], dtype=int)
    expected = dict(precision=precision_score(truth, decisions), recall=recall_score(truth, decisions),
                    f1=f1_score(truth, decisions))
    assert expected == pytest.approx(dict(precision=0.75, recall=0.75, f1=0.75))  # 3 of 4 flagged are anomalies
    for part in (metrics.per_id[0], metrics.per_type["fan"], metrics.mean):
        assert {k: part[k] for k in expected} == pytest.approx(expected)
    assert "| 0.750 / 0.750 / 0.750 |" in _metrics_table({"RC-MAE": metrics})
