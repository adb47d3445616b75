"""Operating points: abstention ("uncertain") and triage thresholds, and the decision
metrics they give (coverage, selective accuracy, sensitivity, specificity).

A model with a class of unknown malignancy (flag None) gives no triage, so neither
calibration nor evaluation measures one: both report `triage_skipped`."""

from __future__ import annotations

import math

import numpy as np

from dermalens.data.records import DataError


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Answers kept when accepting confidence >= each distinct threshold, highest first."""
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], np.asarray(correct, float)[order]
    last = np.r_[conf[1:] != conf[:-1], True]  # a threshold keeps every tie
    kept = np.arange(1, len(conf) + 1)[last]
    return {
        "threshold": conf[last],
        "coverage": kept / len(conf),
        "selective_accuracy": np.cumsum(ok)[last] / kept,
    }


def _just_below(value: float, others: np.ndarray) -> float:
    """Halfway from `value` to the next lower score, so tiny numeric noise keeps the side."""
    lower = others[others < value]
    return float((value + lower.max()) / 2) if lower.size else float(value)


def choose_uncertain_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float = 0.90, min_coverage: float = 0.80
) -> float:
    """The answer's probability below which it is "uncertain" (see the module docstring)."""
    curve = risk_coverage(confidence, correct)
    meets = (curve["selective_accuracy"] >= target) & (curve["coverage"] >= min_coverage)
    if meets.any():
        i = int(np.flatnonzero(meets)[-1])  # largest coverage that meets the target
    else:
        i = int(np.flatnonzero(curve["coverage"] >= min_coverage)[0])
    return _just_below(curve["threshold"][i], confidence)


def choose_triage_threshold(
    p_malignant: np.ndarray, is_malignant: np.ndarray, sensitivity: float = 0.95
) -> float:
    """Highest P(malignant) threshold flagging >= `sensitivity` of the malignant images."""
    positives = np.sort(p_malignant[is_malignant])
    if not len(positives):
        raise DataError("no malignant images to choose a triage threshold on")
    misses = math.floor((1 - sensitivity) * len(positives) + 1e-9)
    return _just_below(positives[misses], p_malignant)


def triage_skipped(unknown: list[str], shown: int = 10) -> dict:
    """The triage entry for a model whose classes `unknown` have unknown malignancy."""
    more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
    return {
        "skipped": (
            f"no benign / malignant triage: the malignancy of {', '.join(unknown[:shown])}"
            f"{more} is unknown, so the model gives none (a clinician must decide)"
        ),
        "unknown_malignancy": list(unknown),
    }


def _rate(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def decision_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    answers: np.ndarray,
    malignant: np.ndarray | list[bool | None],
    uncertain_below: float,
    triage_at: float,
    not_skin: np.ndarray | None = None,
    classes: list[str] | None = None,
) -> dict:
    """Abstention and triage as the Predictor decides them, on labelled probabilities and
    the answers given (`Predictor.decide`). `malignant`: each class's flag; any None
    (unknown) skips triage, naming those of `classes`."""
    flags = list(malignant)
    unknown = [classes[i] if classes else str(i) for i, f in enumerate(flags) if f is None]
    labels, malignant = np.asarray(labels, int), np.array([bool(f) for f in flags], bool)
    answers = np.asarray(answers, int)
    correct = answers == labels
    kept = probs[np.arange(len(answers)), answers] >= uncertain_below
    if not_skin is not None:
        kept &= ~np.asarray(not_skin, bool)
    is_mal = malignant[labels]
    flagged = probs[:, malignant].sum(axis=1) >= triage_at
    everyone = np.ones(len(labels), bool)
    abstention = {
        "uncertain_below": float(uncertain_below),
        "coverage": _rate(kept, everyone),
        "selective_accuracy": _rate(correct, kept),
        "accuracy_all": _rate(correct, everyone),
    }
    if unknown:
        return {"abstention": abstention, "triage": triage_skipped(unknown)}
    return {
        "abstention": abstention,
        "triage": {
            "threshold": float(triage_at),
            "sensitivity": _rate(flagged, is_mal),
            "specificity": _rate(~flagged, ~is_mal),
            # what the triage outcome does when "uncertain" means "refer to a clinician":
            "malignant_flagged_or_deferred": _rate(flagged | ~kept, is_mal),
            "benign_cleared": _rate(~flagged & kept, ~is_mal),
            "n_malignant": int(is_mal.sum()),
            "n_benign": int((~is_mal).sum()),
        },
    }


def curve_points(curve: dict[str, np.ndarray], step: float = 0.05) -> list[dict]:
    """A compact risk-coverage curve: the first point at or past each coverage step."""
    points = []
    for target in np.arange(step, 1 + 1e-9, step):
        i = int(np.searchsorted(curve["coverage"], target - 1e-9))
        i = min(i, len(curve["coverage"]) - 1)
        points.append(
            {
                "coverage": round(float(curve["coverage"][i]), 4),
                "threshold": round(float(curve["threshold"][i]), 4),
                "selective_accuracy": round(float(curve["selective_accuracy"][i]), 4),
            }
        )
    return points
