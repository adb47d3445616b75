"""Fitting the shift warning (`runtime.shift`) on validation images.

    monitor = fit_shift(acquisition_stats(val_batch, pre, feature_scores, colour_scores))
    bundle.thresholds["shift"] = monitor.to_dict()

Each statistic gets the band between its (a/2) and (1 - a/2) quantiles on validation; the
level a is the largest for which at most `target` of the validation images fall outside
any band. So the clean false-warning rate is chosen, on validation, by construction.
"""

from __future__ import annotations

import numpy as np

from dermalens.runtime.shift import ShiftMonitor

TARGET = 0.03  # share of validation images the warning may flag


def _bands(stats: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    # sample quantiles, not interpolated ones: a band never cuts between two images
    low = np.nanquantile(stats, level / 2, axis=0, method="lower")
    high = np.nanquantile(stats, 1 - level / 2, axis=0, method="higher")
    return low, high


def _flagged(stats: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        out = (stats < low) | (stats > high)
    return float(out.any(axis=1).mean())


def fit_shift(stats: np.ndarray, target: float = TARGET) -> ShiftMonitor:
    """Bands on validation statistics (N x len(STATS)) flagging at most `target` of them."""
    if not 0 < target < 1:
        raise ValueError(f"shift target must lie between 0 and 1, got {target}")
    stats = np.array(stats, np.float64, copy=True)
    if len(stats) < 20:
        raise ValueError(f"{len(stats)} validation images: too few to fit the shift warning")
    unused = np.isnan(stats).all(axis=0)
    lo_level, hi_level = 0.0, target
    for _ in range(40):  # bisection: the flagged share grows with the level
        mid = (lo_level + hi_level) / 2
        if _flagged(stats[:, ~unused], *_bands(stats[:, ~unused], mid)) <= target:
            lo_level = mid
        else:
            hi_level = mid
    with np.errstate(all="ignore"):
        low, high = _bands(np.where(unused, 0.0, stats), lo_level)
    low, high = np.where(unused, np.nan, low), np.where(unused, np.nan, high)
    expected = _flagged(stats[:, ~unused], low[~unused], high[~unused])
    return ShiftMonitor(low, high, expected, lo_level)
