"""Property tests: every fit gives finite results on any sample real recordings can produce (constant, tiny,
outlier-heavy, negative, huge), with the fallback it used recorded."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from encoded_values import encoded as make_encoded
from rcmae.data.classes import ClipClasses
from rcmae.detect.calibration import fit_detector
from rcmae.detect.detector import anomaly_scores
from rcmae.detect.thresholds import THRESHOLD_METHODS, gamma_threshold
from rcmae.sections import ScoreConfig

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
samples = st.one_of(
    arrays(np.float64, st.integers(1, 60), elements=finite),
    st.builds(lambda v, n: np.full(n, v), finite, st.integers(1, 40)),  # constant
    st.builds(lambda base, spike, n: np.r_[np.full(n, base), spike],  # near-constant with one outlier
              finite, finite, st.integers(1, 40)),
    st.builds(lambda scale, n, seed: np.random.default_rng(seed).gamma(2.0, scale, n),
              st.floats(1e-9, 1e9), st.integers(5, 200), st.integers(0, 2**16)),
)


@settings(max_examples=300, deadline=None)
@given(samples, st.floats(0.5, 0.99))
def test_a_threshold_is_always_finite_and_at_or_above_the_bulk(scores, percentile):
    threshold = gamma_threshold(scores, percentile)
    assert np.isfinite(threshold.value) and threshold.method in THRESHOLD_METHODS
    if threshold.method == "constant":
        assert threshold.value > scores.max()
    else:
        assert scores.min() <= threshold.value


def test_the_fallbacks_are_the_ones_named():
    assert gamma_threshold(np.full(8, 3.0), 0.9).method == "constant"
    assert gamma_threshold(np.array([1.0, 2.0, 3.0]), 0.9).method == "percentile"  # too few for a gamma
    rng = np.random.default_rng(0)
    assert gamma_threshold(rng.gamma(3.0, 2.0, 500), 0.9).method == "gamma"


clip_counts = st.lists(st.integers(1, 6), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clip_counts, st.sampled_from(["identical", "near", "spread", "huge", "negative"]), st.integers(0, 2**16))
def test_a_detector_fit_on_degenerate_train_clips_is_finite(counts, kind, seed):
    rng = np.random.default_rng(seed)
    if sum(counts) < 3:
        counts = counts + [3]
    keys = [f"m/{i:02d}" for i, n in enumerate(counts) for _ in range(n)]
    base = rng.normal(size=(1, 12))
    noise = {"identical": 0.0, "near": 1e-9, "spread": 1.0, "huge": 1e6, "negative": 1.0}[kind]
    pooled = base * (1e6 if kind == "huge" else 1.0) + noise * rng.normal(size=(len(keys), 12))
    if kind == "negative":
        pooled = -np.abs(pooled) - 100
    embeddings = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    classes = sorted(set(keys))
    log_probs = np.log(np.full((len(keys), len(classes)), 1.0 / len(classes)))
    encoded = make_encoded(pooled, embeddings, log_probs)
    clips = ClipClasses.of_machines(classes, keys)
    detector = fit_detector(encoded, keys, clips, ScoreConfig(components=4))
    for method, per_key in detector.thresholds.items():
        assert set(per_key) == set(classes) and all(np.isfinite(v) for v in per_key.values()), method
        probe = make_encoded(pooled + rng.normal(size=pooled.shape), embeddings, log_probs)
        assert np.isfinite(anomaly_scores(method, probe, keys, clips, detector)).all(), method


def test_non_finite_features_name_the_clips():
    from rcmae.errors import DataError

    pooled = np.ones((4, 3))
    pooled[2, 1] = np.nan
    encoded = make_encoded(pooled, np.ones((4, 3)) / np.sqrt(3), np.zeros((4, 1)))
    with pytest.raises(DataError, match=r"1 train clip\(s\) give non-finite encoder features, e\.g\. c\.wav \(m/00\)"):
        fit_detector(encoded, ["m/00"] * 4, ClipClasses.as_machine(["m/00"], "m/00", 4), ScoreConfig(),
                     paths=["a.wav", "b.wav", "c.wav", "d.wav"])
