"""The scores that keep time and the fusions: the rhythm statistic, the patch maps, the log-mel statistics, kNN, and the
combined and fused scores, against hand computations."""

import numpy as np
import pytest
import torch

from encoded_values import encoded
from rcmae.config import tiny
from rcmae.data.classes import ClipClasses
from rcmae.detect.calibration import fit_detector
from rcmae.detect.detector import Detector, anomaly_scores
from rcmae.detect.fusions import FUSIONS, fuse, log_scale
from rcmae.detect.patches import PATCH_DIMS, PatchModel, top_mean
from rcmae.detect.rhythm import envelope_autocorrelation
from rcmae.detect.shrunk import SHRINKAGE
from rcmae.models.mae import RCMAE
from rcmae.sections import ScoreConfig


def test_rhythm_is_each_band_groups_normalised_envelope_autocorrelation():
    rng = np.random.default_rng(0)
    specs = rng.normal(size=(2, 8, 16))  # 16 frames: lags 1..12, one lag per bin
    found = envelope_autocorrelation(specs).reshape(2, 8, 12)  # 8 bands -> 8 groups of one band
    for clip in range(2):
        for band in range(8):
            envelope = specs[clip, band] - specs[clip, band].mean()
            expected = [np.dot(envelope[:-lag], envelope[lag:]) / np.dot(envelope, envelope) for lag in range(1, 13)]
            np.testing.assert_allclose(found[clip, band], expected, rtol=1e-9, atol=1e-12)


def test_rhythm_sees_the_period_of_strokes_and_not_their_phase():
    specs = np.zeros((2, 16, 64))
    specs[0, :, 3::8] = 10.0
    specs[1, :, 6::8] = 10.0  # the same strokes, later
    rhythm = envelope_autocorrelation(specs).reshape(2, 8, 24)  # lags 1..48 in bins of 2
    assert np.all(np.argmax(rhythm, axis=2) == 3)  # the bin of lags 7-8
    np.testing.assert_allclose(rhythm[0], rhythm[1], atol=0.05)
    assert not envelope_autocorrelation(np.ones((1, 16, 64))).any()  # a steady sound has no rhythm


def test_a_patch_model_is_a_shrunk_gaussian_per_frequency_row_standardised_on_train_patches():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(20, 2, 3, PATCH_DIMS)) * np.linspace(0.5, 2.0, PATCH_DIMS)
    model = PatchModel.fit(train)
    row = train[:, 1].reshape(-1, PATCH_DIMS)
    covariance = np.cov(row, rowvar=False)
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.trace(covariance) / PATCH_DIMS * np.eye(PATCH_DIMS)
    probe = rng.normal(size=(1, 2, 3, PATCH_DIMS))
    centred = probe[0, 1, 2] - row.mean(axis=0)
    assert model.distances(probe)[0, 1, 2] == pytest.approx(centred @ np.linalg.solve(shrunk, centred), rel=1e-9)
    train_maps = model.map(train)
    np.testing.assert_allclose(train_maps.mean(axis=(0, 2)), 0.0, atol=1e-9)
    np.testing.assert_allclose(train_maps.std(axis=(0, 2)), 1.0, rtol=1e-6)


def test_the_patch_map_peaks_where_a_clip_departs_and_the_score_is_its_top_mean():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(30, 4, 8, PATCH_DIMS))
    probe = rng.normal(size=(1, 4, 8, PATCH_DIMS))
    probe[0, 2, 5] += 6.0
    maps = PatchModel.fit(train).map(probe)
    assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) == (2, 5)
    values = np.arange(40.0).reshape(1, 4, 10)  # 5 % of 40 patches: the top 2
    assert top_mean(values)[0] == pytest.approx(38.5)


def test_combined_is_the_largest_and_fused_the_mean_standardised_log_score_of_their_members():
    calibration = {"mahalanobis": {"a/00": (1.0, 2.0)}, "rhythm": {"a/00": (0.0, 0.5)},
                   "stats": {"a/00": (2.0, 1.0)}, "patch": {"a/00": (-1.0, 4.0)}}
    detector = Detector({}, {}, calibration=calibration)
    scores = {"mahalanobis": np.exp([1.0, 5.0]), "rhythm": np.exp([1.0, 0.5]), "stats": np.exp([3.0, 2.0]),
              "patch": np.array([3.0, -1.0])}  # already a log: standardised as it is
    assert FUSIONS["combined"].members == ("mahalanobis", "rhythm")
    np.testing.assert_allclose(fuse("combined", scores, ["a/00"] * 2, detector), [2.0, 2.0])
    # standardised: mahalanobis 0, 2; rhythm 2, 1; stats 1, 0
    assert FUSIONS["fused"].members == ("stats", "mahalanobis", "rhythm")
    np.testing.assert_allclose(fuse("fused", scores, ["a/00"] * 2, detector), [2.0, 2.0])
    scores["rhythm"] = np.exp([-1.0, 0.0])  # standardised -2, 0: stats and mahalanobis decide
    np.testing.assert_allclose(fuse("fused", scores, ["a/00"] * 2, detector), [1.0, 2.0])


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_fusions_are_calibrated_on_held_out_train_scores(fusion):
    """In-sample distances of a 30-clip Gaussian understate how far a new normal clip lies; held-out ones do not,
    so a fresh normal clip's fused score sits near the middle of the train clips', not far above."""
    rng = np.random.default_rng(3)
    train, fresh = rng.normal(size=(30, 12)), rng.normal(size=(200, 12))
    patches = rng.normal(size=(230, 2, 8, PATCH_DIMS))  # 16 patches a clip, as a model's grid gives
    keys = ["a/00"] * 30
    detector = fit_detector(encoded(train, log_probs=np.zeros((30, 1)), patches=patches[:30]), keys,
                            ClipClasses.of_machines(["a/00"], keys), ScoreConfig(components=8))
    members = FUSIONS[fusion].members
    fresh_clips = ClipClasses.as_machine(["a/00"], "a/00", 200)
    fresh_scores = {m: anomaly_scores(m, encoded(fresh, patches=patches[30:]), ["a/00"] * 200, fresh_clips, detector)
                    for m in members}
    for method in members:
        logs = log_scale(method, fresh_scores[method])
        mean, std = detector.calibration[method]["a/00"]
        assert abs(logs.mean() - mean) < 0.5 * std, method
    fused = fuse(fusion, fresh_scores, ["a/00"] * 200, detector)
    assert np.mean(fused <= detector.thresholds[fusion]["a/00"]) > 0.75


def test_knn_averages_the_distances_to_the_nearest_train_embeddings():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    probe = np.array([[np.sqrt(0.5), np.sqrt(0.5)]])
    cosine = 1.0 - np.sqrt(0.5)  # to each of the two nearest
    for k, distance, expected in ((1, "cosine", cosine), (2, "cosine", cosine),
                                  (3, "cosine", (2 * cosine + 1.0 + np.sqrt(0.5)) / 3),
                                  (1, "euclidean", np.sqrt(2 * cosine))):
        detector = Detector({}, {}, neighbours={"a/00": train}, knn_k=k, knn_distance=distance)
        clips = ClipClasses.as_machine(["a/00"], "a/00", 1)
        got = anomaly_scores("knn", encoded(probe, embeddings=probe), ["a/00"], clips, detector)
        assert got[0] == pytest.approx(expected), (k, distance)


def test_knn_threshold_comes_from_held_out_clips_not_the_clips_themselves():
    """In sample, every clip is its own nearest neighbour (distance 0); held out, a train clip lies as far as a new
    normal clip does, so the threshold passes most fresh normal clips."""
    rng = np.random.default_rng(4)
    train, fresh = rng.normal(size=(30, 8)), rng.normal(size=(200, 8))
    unit = lambda values: values / np.linalg.norm(values, axis=1, keepdims=True)  # noqa: E731
    detector = fit_detector(encoded(train, embeddings=unit(train), log_probs=np.zeros((30, 1))), ["a/00"] * 30,
                            ClipClasses.as_machine(["a/00"], "a/00", 30), ScoreConfig(components=4))
    assert detector.threshold_methods["knn"]["a/00"] != "constant"
    scores = anomaly_scores("knn", encoded(fresh, embeddings=unit(fresh)), ["a/00"] * 200,
                            ClipClasses.as_machine(["a/00"], "a/00", 200), detector)
    assert np.mean(scores <= detector.thresholds["knn"]["a/00"]) > 0.75


def test_stats_score_reads_the_floors_statistics_with_a_covariance_the_type_shares():
    """`stats` reads what the floor reference reads (each band's mean and deviation), scored by the ID's own mean and
    a covariance of its own and its type mates' spread, each centred on its ID, shrunk as Ledoit-Wolf says."""
    from sklearn.covariance import LedoitWolf

    from rcmae.detect.floor import clip_statistics

    rng = np.random.default_rng(5)
    train_specs = np.concatenate([rng.normal(size=(12, 4, 20)), rng.normal(2.0, 1.0, size=(12, 4, 20)),
                                  rng.normal(size=(12, 4, 20))])
    keys = ["a/00"] * 12 + ["a/01"] * 12 + ["b/00"] * 12  # b/00 is another type: no mate of a/00
    test_specs = rng.normal(size=(5, 4, 20)) * 1.5
    train_stats = clip_statistics(train_specs)
    detector = fit_detector(encoded(train_stats, log_probs=np.zeros((36, 3))), keys,
                            ClipClasses.of_machines(["a/00", "a/01", "b/00"], keys), ScoreConfig(components=2))
    test_stats = clip_statistics(test_specs)
    got = anomaly_scores("stats", encoded(test_stats), ["a/00"] * 5, ClipClasses.as_machine(["a/00"], "a/00", 5),
                         detector)
    own, mate = train_stats[:12], train_stats[12:24]
    spread = np.concatenate([own - own.mean(axis=0), mate - mate.mean(axis=0)])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(spread).covariance_)
    centred = test_stats - own.mean(axis=0)
    np.testing.assert_allclose(got, np.einsum("ij,jk,ik->i", centred, precision, centred), rtol=1e-6)


def test_grid_tokens_are_the_unmasked_encoder_tokens_in_grid_order():
    config = tiny()
    torch.manual_seed(0)
    model = RCMAE(model=config.model, features=config.features).eval()
    specs = torch.randn(2, config.features.n_mels, config.features.n_frames)
    with torch.no_grad():
        pooled, _, tokens = model.embed(specs)
    rows, cols = config.features.grid
    assert tokens.shape == (2, rows * cols, config.model.embed_dim)
    # frequency pooling is each row's mean over time of the same tokens
    torch.testing.assert_close(tokens.reshape(2, rows, cols, -1).mean(dim=2).reshape(2, -1), pooled)
