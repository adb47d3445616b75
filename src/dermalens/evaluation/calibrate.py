"""Calibration and operating points, all chosen on validation images of a saved split.

    dermalens calibrate runs/x/bundle DATA --split-file runs/x/split.csv

1. Probabilities: softmax(logits / T + b), a temperature T > 0 and a per-class bias b,
   fitted together by minimising the validation negative log-likelihood; ECE and
   reliability diagrams are reported before and after. A class-weighted model is tilted
   towards rare classes on purpose; b undoes the tilt in the probabilities, so they match
   how often each class really is right. Answers: argmax(log p - b) = argmax(logits), the
   model's own class-balanced ranking (stored as the bundle's `decision_bias`), so
   calibration changes no answer. `Targets(class_bias=False)`: temperature only.
2. Abstention ("uncertain"): the smallest threshold on the answer's probability at which the
   answers kept reach `Targets.selective_accuracy` on validation, i.e. the largest
   coverage that meets the target; never deferring more than 1 - `min_coverage` of images.
3. Triage: malignant when P(malignant) = sum of the malignant classes' calibrated
   probabilities reaches the highest threshold that still flags at least
   `Targets.sensitivity` of the validation malignant images. Skipped (no threshold, the
   reason recorded) for a model with a class of unknown malignancy: it gives no triage.
4. Out-of-distribution check (`runtime.ood`, fitted by `evaluation.ood_fit`): fitted on
   training images' features, thresholded at a high quantile of validation scores.
5. Shift warning (`evaluation.shift_fit`): validation bands (`thresholds["shift"]`).
   `Targets(triage_under_shift=True)`: the triage threshold is chosen on clean and
   corrupted validation malignant images pooled (`evaluation.shift_points`).

Results go into the bundle (`temperature`, `thresholds`, `metrics`, `ood.npz`), figures
into `out_dir`. Validation numbers are optimistic for thresholds chosen on them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from dermalens.bundle import Bundle, load_bundle
from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError
from dermalens.data.splits import load_split
from dermalens.evaluation import shift_fit, shift_points
from dermalens.evaluation.evaluate import record_test as record
from dermalens.evaluation.evaluate import run_table
from dermalens.evaluation.metrics import expected_calibration_error
from dermalens.evaluation.ood_fit import fit_ood_check, save_ood
from dermalens.evaluation.plots import plot_reliability, plot_risk_coverage
from dermalens.evaluation.thresholds import (
    choose_triage_threshold,
    choose_uncertain_threshold,
    curve_points,
    risk_coverage,
    triage_skipped,
)
from dermalens.files import now
from dermalens.runtime.ood import load_ood
from dermalens.runtime.predictor import Predictor


@dataclass(frozen=True)
class Targets:
    """Rules for the operating points; every one is applied to validation data."""

    selective_accuracy: float = 0.90  # abstain until the answers kept are this accurate...
    min_coverage: float = 0.80  # ...but never defer more than 20% of images
    sensitivity: float = 0.95  # triage flags at least this share of malignant lesions
    # OOD thresholds: quantiles of validation skin scores, the feature judge's and the colour
    # judge's; among the pairs that turn away at most `ood_max_val_reject` of validation
    # skin images, the one that catches the most probe images, then rejects the fewest
    # skin images, is kept (`ood.choose_thresholds`)
    ood_quantiles: tuple[float, ...] = (0.99, 0.995, 0.998, 0.999)
    ood_colour_quantiles: tuple[float, ...] = (0.98, 0.985, 0.99, 0.995)
    ood_max_val_reject: float = 0.02
    ood_k: int = 10  # the OOD score is the distance to this nearest training image
    ood_fit_images: int = 1000  # training images kept for the OOD check (class-balanced)
    seed: int = 0  # for that sample
    # fit a per-class bias with the temperature (probabilities calibrated to the data's
    # class mix; answers keep the model's class-balanced ranking); False: temperature only
    class_bias: bool = True
    shift_target: float = shift_fit.TARGET  # share of validation images the shift warning flags
    triage_under_shift: bool = False  # triage threshold on clean + corrupted validation images

    def __post_init__(self):
        # checked here, not after minutes of feature extraction
        if not 0.0 <= self.ood_max_val_reject <= 1.0:
            raise ValueError(
                f"Targets: ood_max_val_reject must lie in [0, 1], got {self.ood_max_val_reject}"
            )


def _log_probs(logits: np.ndarray, temperature: float, bias: np.ndarray | None = None):
    """Views x N x K logits -> N x K log of the view-averaged softmax(logits / T + bias)."""
    z = np.asarray(logits, np.float64) / temperature
    if bias is not None:
        z = z + bias
    z = z.reshape((-1, *z.shape[-2:]))
    log_p = z - logsumexp(z, axis=2, keepdims=True)
    return logsumexp(log_p, axis=0) - math.log(len(z))


def nll(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bias: np.ndarray | None = None
) -> float:
    """Mean negative log-likelihood of `labels` (N x K logits, or views x N x K)."""
    log_p = _log_probs(logits, temperature, bias)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature_and_bias(
    logits: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = (0.05, 20.0),
    temperature_only: float | None = None,
) -> tuple[float, np.ndarray]:
    """T and a per-class bias b minimising the NLL of softmax(logits / T + b).

    A class-weighted model is tilted towards rare classes on purpose; one temperature
    cannot undo a tilt, a bias can. b is centred (softmax ignores a shift); its first
    entry is held at 0 during the fit and each stays within +-10. The fit starts from
    the temperature-only fit (`temperature_only`, fitted here when not given).
    """
    labels = np.asarray(labels, dtype=int)
    k = np.asarray(logits).shape[-1]

    def loss(params: np.ndarray) -> float:
        return nll(logits, labels, math.exp(params[0]), np.r_[0.0, params[1:]])

    t_only = temperature_only or fit_temperature(logits, labels, bounds)
    start = np.r_[math.log(t_only), np.zeros(k - 1)]
    limits = [(math.log(bounds[0]), math.log(bounds[1]))] + [(-10.0, 10.0)] * (k - 1)
    result = minimize(loss, start, method="L-BFGS-B", bounds=limits)
    bias = np.r_[0.0, result.x[1:]]
    if loss(result.x) > loss(start):  # never worse than temperature alone
        return float(math.exp(start[0])), np.zeros(k)
    return float(math.exp(result.x[0])), bias - bias.mean()


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The T in `bounds` minimising the NLL of softmax(logits / T); views are averaged."""
    labels = np.asarray(labels, dtype=int)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def _calibration(logits, labels, temperature, bias, t_only, out_dir: Path | None) -> dict:
    out = {
        "temperature": temperature,
        "class_bias": [round(float(b), 6) for b in bias],
        "n": int(len(labels)),
    }
    if not 0.06 < temperature < 19.0:  # at the search bound: the fit says little
        out["warning"] = "temperature at its search bound: is the model better than chance?"
    biased = bool(np.any(bias))
    for when, t, b in (("before", 1.0, None), ("after", temperature, bias)):
        probs = np.exp(_log_probs(logits, t, b))
        ece, bins = expected_calibration_error(labels, probs)
        out[f"ece_{when}"], out[f"nll_{when}"] = ece, nll(logits, labels, t, b)
        if out_dir is not None:
            how = "temperature + class bias" if biased and when == "after" else "temperature"
            title = f"{when} {how} scaling (T = {t:.2f})"
            plot_reliability(bins, ece, out_dir / f"reliability-{when}.png", title)
    if biased:  # what temperature alone would have given, for the record
        out["temperature_only"] = {
            "temperature": t_only,
            "ece": expected_calibration_error(labels, np.exp(_log_probs(logits, t_only)))[0],
            "nll": nll(logits, labels, t_only),
        }
    return out


def _abstention(probs, answers, labels, targets: Targets, out_dir: Path | None) -> dict:
    confidence = probs[np.arange(len(answers)), answers]  # the answer's own probability
    correct = answers == labels
    threshold = choose_uncertain_threshold(
        confidence, correct, targets.selective_accuracy, targets.min_coverage
    )
    kept = confidence >= threshold
    curve = risk_coverage(confidence, correct)
    chosen = {
        "uncertain_below": threshold,
        "coverage": float(kept.mean()),
        "selective_accuracy": float(correct[kept].mean()) if kept.any() else 0.0,
    }
    if out_dir is not None:
        plot_risk_coverage(curve, chosen, targets.selective_accuracy, out_dir / "risk-coverage.png")
    rule = (
        f"smallest threshold on the answer's probability whose kept answers are >= "
        f"{targets.selective_accuracy:.0%} accurate on validation, answering at least "
        f"{targets.min_coverage:.0%} of images (exactly that many if the target is out of reach)"
    )
    return {
        "rule": rule,
        **chosen,
        "accuracy_all": float(correct.mean()),
        # area under the risk-coverage curve: mean error over all coverages (lower is better)
        "aurc": float(np.mean(1 - curve["selective_accuracy"])),
        "curve": curve_points(curve),
    }


def _triage(probs, labels, bundle: Bundle, targets: Targets) -> dict:
    if bundle.unknown_malignancy:
        return triage_skipped(bundle.unknown_malignancy)
    classes, malignant = bundle.classes, np.array(bundle.malignant, bool)
    if not malignant.any():
        return {"skipped": "the model has no malignant classes"}
    p_mal, is_mal = probs[:, malignant].sum(axis=1), malignant[labels]
    if not is_mal.any() or is_mal.all():
        return {"skipped": "validation needs both malignant and benign images"}

    threshold = choose_triage_threshold(p_mal, is_mal, targets.sensitivity)
    flagged = p_mal >= threshold
    return {
        "rule": (
            f"malignant if P({' + '.join(c for c, m in zip(classes, malignant) if m)}) >= "
            f"threshold: the highest threshold flagging >= {targets.sensitivity:.0%} of "
            f"validation malignant images"
        ),
        "threshold": threshold,
        "sensitivity": float(flagged[is_mal].mean()),
        "specificity": float((~flagged[~is_mal]).mean()),
        "auc": float(roc_auc_score(is_mal, p_mal)),
        "n_malignant": int(is_mal.sum()),
        "n_benign": int((~is_mal).sum()),
    }


def calibrate(
    bundle: Bundle,
    val: pd.DataFrame,
    fit: pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    fit_ood: bool = True,
    tta: bool = False,
    targets: Targets | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> dict:
    """Calibrate `bundle` on table `val` (OOD fitted on table `fit`); save it; return a summary.

    Tables have the columns of `data.records.COLUMNS`. `tta=True` fits everything on
    test-time-augmented probabilities, for bundles that will be served with TTA.
    """
    targets = targets or Targets()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    val = val[val["label"].isin(bundle.classes)].reset_index(drop=True)
    if len(val) < 2:
        raise DataError(f"{len(val)} validation images of the model's classes: too few")
    predictor = Predictor(bundle, backend, ood=False)
    run = run_table(predictor, val, progress=progress, tta=tta)
    ok = run.ok
    labels = val["label"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy()[ok]
    logits = run.logits[:, ok]
    t_only = fit_temperature(logits, labels)
    if bundle.is_ensemble:
        # the mean of calibrated members' probabilities: nothing to refit (runtime.ensemble)
        temperature, bias = 1.0, np.zeros(len(bundle.classes))
    elif targets.class_bias:
        temperature, bias = fit_temperature_and_bias(logits, labels, temperature_only=t_only)
    else:
        temperature, bias = t_only, np.zeros(len(bundle.classes))
    if not bundle.is_ensemble:
        bundle.temperature = temperature
        bundle.class_bias = [float(b) for b in bias]
        # answers keep the class-weighted ranking: argmax(log p - bias) = argmax(z)
        bundle.decision_bias = [float(-b) for b in bias]
    predictor.read_calibration()
    probs = predictor.calibrated(logits)
    answers = predictor.decide(probs)
    metrics = {
        "calibration": {
            **_calibration(logits, labels, temperature, bias, t_only, out),
            "tta": tta,
        },
        "abstention": _abstention(probs, answers, labels, targets, out),
        "triage": _triage(probs, labels, bundle, targets),
    }
    if bundle.is_ensemble:
        metrics["calibration"]["rule"] = (
            "ensemble: the mean of its members' calibrated probabilities, not refitted"
        )
    bundle.thresholds["uncertain_below"] = metrics["abstention"]["uncertain_below"]
    if "threshold" in metrics["triage"]:
        bundle.thresholds["triage_malignant"] = metrics["triage"]["threshold"]
    detector = load_ood(bundle)  # kept as it is unless refitted now
    if fit_ood:
        detector, metrics["ood"] = fit_ood_check(predictor, run, labels, fit, targets, progress)
        save_ood(bundle, detector)
    monitor, metrics["shift"] = shift_fit.shift_from_run(run, detector, targets.shift_target)
    bundle.thresholds.pop("shift", None)  # an older fit would not match the recalibrated model
    if monitor is not None:
        bundle.thresholds["shift"] = monitor.to_dict()
    if targets.triage_under_shift and "threshold" in metrics["triage"]:
        tri = shift_points.triage_step(predictor, detector, val[ok], probs, labels, targets)
        metrics["triage"] = {**metrics["triage"], **tri}
        bundle.thresholds["triage_malignant"] = tri["threshold"]
    bundle.metrics.update(metrics)
    bundle.info["calibrated"] = {
        "at": now(),
        "images": int(ok.sum()),
        "unreadable": run.problems,
        "targets": asdict(targets),
    }
    bundle.save_description()
    summary = {k: {n: v for n, v in m.items() if n != "curve"} for k, m in metrics.items()}
    return {"bundle": str(bundle.path), "thresholds": dict(bundle.thresholds), **summary}


def calibrate_bundle(
    bundle_path: str | Path,
    data: str | Path,
    split_file: str | Path,
    split: str = "val",
    out_dir: str | Path | None = None,
    fit_ood: bool = True,
    tta: bool = False,
    targets: Targets | None = None,
    backend: str = "auto",
    progress: bool = True,
    record_test: bool = False,
) -> dict:
    """Calibrate a saved bundle on part `split` of a run's split CSV (OOD fitted on "train").

    Writes reliability-before/after.png and risk-coverage.png into `out_dir` (default: a
    `calibration` folder next to the bundle) and returns a JSON-ready summary.
    `record_test=True` then evaluates the split's test part (exact duplicates once, as
    training does) into the bundle's description, with its reports under `out_dir`.
    """
    bundle = load_bundle(bundle_path)
    dataset = load_dataset(data)
    table = load_split(dataset, Path(split_file))
    val = table[table["split"] == split]
    if val.empty:
        parts = sorted(table["split"].unique())
        raise DataError(f"{split_file}: no images in split {split!r}; it has {parts}")
    fit = table[table["split"] == "train"] if split != "train" else None
    out = Path(out_dir) if out_dir is not None else bundle.path.parent / "calibration"
    if record_test:  # checked before the long calibration
        test = drop_duplicate_extras(table)
        test = test[test["split"] == "test"]
        if test.empty:
            raise DataError(f"{split_file}: no test part to record")
    summary = calibrate(bundle, val, fit, out, fit_ood, tta, targets, backend, progress)
    if record_test:
        result = record(load_bundle(bundle.path), test, out, progress)
        summary["test"] = result.metrics_brief()
    return summary
