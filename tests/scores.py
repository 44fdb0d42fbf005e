"""Comparing anomaly scores computed by two paths through the same float32 encoder."""
import pytest

# Batching changes float32 summation order: about 1e-7 of the encoder's activations. A score near zero (a
# log-probability of a well-classified clip) carries that error in absolute terms, so relative alone is too tight.
ROUND_OFF = {"rel": 1e-4, "abs": 1e-5}


def same_score(expected):
    """`pytest.approx` for scores (a number or a sequence) that differ only by float32 round-off."""
    return pytest.approx(expected, **ROUND_OFF)
