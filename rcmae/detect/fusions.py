"""Scores made of others (`combined`, `fused`): each member's log-scores standardised by the machine's held-out
train log-scores, taken at their largest or their mean. Numpy only: the edge runtime (`rcmae.edge`) uses it too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rcmae.registry import SCORES


class Calibrated(Protocol):
    """What a fusion reads of a detector: method -> machine key -> (mean, std) of its held-out train log-scores."""

    calibration: dict[str, dict[str, tuple[float, float]]]


@dataclass(frozen=True)
class Fusion:
    """A score made of others: per clip, their log-scores standardised by the ID's held-out train log-scores
    (so a score that overfits its train clips does not dominate), taken at their largest or their mean."""

    members: tuple[str, ...]
    rule: str  # "max" or "mean"


FUSIONS = {
    "combined": Fusion(("mahalanobis", "rhythm"), "max"),
    # the clip's own log-mel statistics (what the floor reads) beside what the model and the rhythm hear: a clip is
    # as odd as its oddest view. Chosen among the few rules benchmarks/fusion.py names, on the toy factory's three
    # sets (the best worst case against the floor); no weights are fitted, to test labels or otherwise
    "fused": Fusion(("stats", "mahalanobis", "rhythm"), "max"),
}


def members_of(method: str) -> tuple[str, ...]:
    """The single scores `method` is made of (itself, when it is not a fusion)."""
    return FUSIONS[method].members if method in FUSIONS else (method,)


def edge_methods() -> list[str]:
    """The score methods the edge runtime computes: its own, and the fusions made only of them."""
    return [name for name in SCORES if all(SCORES[member].on_edge for member in members_of(name))]


def log_scale(method: str, scores: np.ndarray) -> np.ndarray:
    """A member's scores on the scale a fusion standardises: the log of a distance, a log-scale score as it is."""
    scores = np.asarray(scores, dtype=np.float64)  # in float32 the floor of 1e-300 would be 0, and its log -inf
    return np.log(np.maximum(scores, 1e-300)) if SCORES[method].positive else scores


def standardised(method: str, scores: np.ndarray, keys: list[str], detector: Calibrated) -> np.ndarray:
    """`method`'s log-scores, standardised by each clip's ID's held-out train log-scores."""
    stats = np.array([detector.calibration[method][key] for key in keys]).reshape(len(keys), 2)
    return (log_scale(method, scores) - stats[:, 0]) / stats[:, 1]


def fuse(name: str, scores: dict[str, np.ndarray], keys: list[str], detector: Calibrated) -> np.ndarray:
    """The fusion `name` of its members' `scores`."""
    fusion = FUSIONS[name]
    parts = [standardised(member, scores[member], keys, detector) for member in fusion.members]
    return np.max(parts, axis=0) if fusion.rule == "max" else np.mean(parts, axis=0)
