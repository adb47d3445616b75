"""Fitting the shift warning (`runtime.shift`) on validation images.

    monitor = fit_shift(acquisition_stats(val_batch, pre, feature_scores, colour_scores))
    bundle.thresholds["shift"] = monitor.to_dict()

Each statistic gets the band between its (a/2) and (1 - a/2) quantiles on validation; the
level a is the largest for which at most `target` of the validation images fall outside
any band. So the clean false-warning rate is chosen, on validation, by construction.

`calibrate` fits it with everything else (`shift_from_run`); `fit_shift_warning` fits it
alone into a calibrated bundle (`dermalens calibrate ... --shift-only`), leaving its
temperature, thresholds and OOD check exactly as they were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError
from dermalens.data.splits import load_split
from dermalens.evaluation.evaluate import TableRun, run_stats, run_table
from dermalens.files import now
from dermalens.runtime.ood import OodDetector
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.shift import ShiftMonitor

TARGET = 0.03  # share of validation images the warning may flag
MIN_IMAGES = 20  # validation images the bands need


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
    if len(stats) < MIN_IMAGES:
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


def shift_from_run(
    run: TableRun, detector: OodDetector | None, target: float = TARGET
) -> tuple[ShiftMonitor | None, dict]:
    """The shift warning fitted on a validation run, and its report for bundle metrics;
    (None, a report saying why) when validation has too few images for the bands."""
    if run.ok.sum() < MIN_IMAGES:
        n = int(run.ok.sum())
        return None, {"skipped": f"{n} validation images: too few to fit the shift warning"}
    monitor = fit_shift(run_stats(run, detector), target)
    ref = monitor.to_dict()
    return monitor, {"rule": ref["rule"], "target": target, "n": int(run.ok.sum())}


def fit_shift_warning(
    bundle_path: str | Path,
    data: str | Path,
    split_file: str | Path,
    split: str = "val",
    target: float = TARGET,
    progress: bool = True,
) -> dict:
    """Fit only the shift warning of a calibrated bundle on part `split` of a split CSV.

    Writes `thresholds["shift"]`, `metrics["shift"]` and `info["shift_fitted"]`; nothing
    else in bundle.json changes. Returns the report."""
    bundle = load_bundle(bundle_path)
    table = load_split(load_dataset(data), Path(split_file))
    val = table[(table["split"] == split) & table["label"].isin(bundle.classes)]
    if val.empty:
        raise DataError(f"{split_file}: no images of the model's classes in split {split!r}")
    predictor = Predictor(bundle)  # the bundle's own OOD check gives the score columns
    run = run_table(predictor, val.reset_index(drop=True), progress=progress, tta=False)
    monitor, report = shift_from_run(run, predictor.ood, target)
    if monitor is None:
        raise DataError(f"{split_file}, split {split!r}: {report['skipped']}")
    bundle.thresholds["shift"] = monitor.to_dict()
    bundle.metrics["shift"] = report
    bundle.info["shift_fitted"] = {"at": now(), "split": split, "images": report["n"]}
    bundle.save_description()
    return {"bundle": str(bundle.path), "shift": bundle.thresholds["shift"], **report}
