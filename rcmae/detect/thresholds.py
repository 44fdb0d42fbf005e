"""Decision thresholds: per method and machine ID, the `decision_percentile` point of a gamma fitted to the ID's
train-normal scores (as the DCASE 2020 baseline), with the fallbacks degenerate train data needs."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import scipy.stats

MIN_GAMMA_SCORES = 5  # fewest scores a gamma is fitted to; fewer take the empirical percentile
log = logging.getLogger(__name__)

ThresholdMethod = Literal["gamma", "percentile", "constant"]
THRESHOLD_METHODS: tuple[ThresholdMethod, ...] = get_args(ThresholdMethod)


@dataclass(frozen=True)
class Threshold:
    value: float
    method: ThresholdMethod  # how `value` was found


def gamma_threshold(scores: np.ndarray, percentile: float) -> Threshold:
    """The `percentile` point of a gamma fitted to train-normal scores (as the DCASE 2020 baseline). Where the
    fit fails or lands outside what the scores allow, the empirical percentile; constant scores (degenerate
    train data: identical clips, a single machine ID's certain classifier) get a threshold just above them."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError(f"a threshold needs finite scores, got {scores.size} with "
                         f"{int((~np.isfinite(scores)).sum())} non-finite")  # callers check first: a bug
    low, high = float(scores.min()), float(scores.max())
    scale = max(abs(low), abs(high), 1e-12)
    if high - low <= 1e-9 * scale:
        return Threshold(high + 1e-6 * scale, "constant")
    empirical = float(np.quantile(scores, percentile))
    if scores.size < MIN_GAMMA_SCORES:
        return Threshold(empirical, "percentile")
    shift = min(0.0, low) - 1e-9  # gamma needs positive support
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, loc, scale_fit = scipy.stats.gamma.fit(scores - shift)
            value = float(scipy.stats.gamma.ppf(percentile, shape, loc=loc, scale=scale_fit) + shift)
    except (scipy.stats.FitError, ValueError, RuntimeError, FloatingPointError):
        return Threshold(empirical, "percentile")
    # a fit that puts the point below the data or far beyond it describes them badly
    if not np.isfinite(value) or value < low or value > high + 10 * (high - low):
        return Threshold(empirical, "percentile")
    return Threshold(value, "gamma")


def warn_fallbacks(threshold_methods: dict[str, dict[str, ThresholdMethod]]) -> None:
    """One line per kind of fallback, naming the IDs (`threshold_methods`: method -> machine key -> how)."""
    for kind, meaning in (("constant", "their train scores are all equal (near-identical train clips, or one "
                                       "machine ID alone): the threshold sits just above them and may flag most "
                                       "test clips"),
                          ("percentile", "a gamma does not fit their train scores: the threshold is the empirical "
                                         "percentile")):
        found = sorted({f"{key} ({method})" for method, per_key in threshold_methods.items()
                        for key, used in per_key.items() if used == kind})
        if found:
            log.warning("detector thresholds: %d ID/method pair(s) where %s: %s", len(found), meaning,
                        ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else ""))
