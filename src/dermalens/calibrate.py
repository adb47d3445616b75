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
   `Targets.sensitivity` of the validation malignant images.
4. Out-of-distribution check (`dermalens.ood`): fitted on training images' features,
   thresholded at a high quantile of validation scores.

Results go into the bundle (`temperature`, `thresholds`, `metrics`, `ood.npz`), figures
into `out_dir`. Validation numbers are optimistic for thresholds chosen on them: report
test numbers from `dermalens evaluate ... --split test`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermalens.bundle import Bundle, load_bundle, now
from dermalens.data.records import DataError
from dermalens.metrics import expected_calibration_error


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

    def __post_init__(self):
        # checked here, not after minutes of feature extraction
        if not 0.0 <= self.ood_max_val_reject <= 1.0:
            raise ValueError(
                f"Targets: ood_max_val_reject must lie in [0, 1], got {self.ood_max_val_reject}"
            )


def _log_probs(logits: np.ndarray, temperature: float, bias: np.ndarray | None = None):
    """Views x N x K logits -> N x K log of the view-averaged softmax(logits / T + bias)."""
    from scipy.special import logsumexp

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
    from scipy.optimize import minimize

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
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=int)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


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


def _rate(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def decision_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    answers: np.ndarray,
    malignant: np.ndarray,
    uncertain_below: float,
    triage_at: float,
    not_skin: np.ndarray | None = None,
) -> dict:
    """Abstention and triage as the Predictor decides them, on labelled probabilities and
    the answers given (`Predictor.decide`)."""
    labels, malignant = np.asarray(labels, int), np.asarray(malignant, bool)
    answers = np.asarray(answers, int)
    correct = answers == labels
    kept = probs[np.arange(len(answers)), answers] >= uncertain_below
    if not_skin is not None:
        kept &= ~np.asarray(not_skin, bool)
    is_mal = malignant[labels]
    flagged = probs[:, malignant].sum(axis=1) >= triage_at
    everyone = np.ones(len(labels), bool)
    return {
        "abstention": {
            "uncertain_below": float(uncertain_below),
            "coverage": _rate(kept, everyone),
            "selective_accuracy": _rate(correct, kept),
            "accuracy_all": _rate(correct, everyone),
        },
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


def plot_risk_coverage(curve: dict[str, np.ndarray], chosen: dict, target: float, path: Path):
    from dermalens.plots import plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(curve["coverage"], 1 - curve["selective_accuracy"], label="selective risk (error)")
    ax.axhline(1 - target, color="k", ls="--", lw=1, label=f"target risk {1 - target:.2f}")
    ax.plot(
        [chosen["coverage"]],
        [1 - chosen["selective_accuracy"]],
        "o",
        color="C3",
        label=f"chosen: answer's p >= {chosen['uncertain_below']:.2f}",
    )
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("error among answered images")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, None)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _calibration(logits, labels, temperature, bias, t_only, out_dir: Path | None) -> dict:
    from dermalens.plots import plot_reliability

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


def _triage(probs, labels, classes: list[str], malignant: np.ndarray, targets: Targets) -> dict:
    if not malignant.any():
        return {"skipped": "the model has no malignant classes"}
    p_mal, is_mal = probs[:, malignant].sum(axis=1), malignant[labels]
    if not is_mal.any() or is_mal.all():
        return {"skipped": "validation needs both malignant and benign images"}
    from sklearn.metrics import roc_auc_score

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


def balanced_sample(table: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to `n` rows with shares per class as equal as the class sizes allow.

    The OOD model is fitted on it so that rare classes (df, vasc) shape the feature
    subspace too; fitted on a plain sample, nv dominates and rare lesions look "not skin".
    """
    sizes = table["label"].value_counts()
    order = sorted(sizes.index, key=lambda c: (sizes[c], c))
    parts, left = [], n
    for i, label in enumerate(order):
        take = min(int(sizes[label]), left // (len(order) - i))
        parts.append(table[table["label"] == label].sample(take, random_state=seed))
        left -= take
    return pd.concat(parts)


def _ood(predictor, val_run, val_labels, fit: pd.DataFrame | None, targets, progress) -> tuple:
    from dermalens.evaluate import ood_rates, run_table
    from dermalens.ood import (
        choose_thresholds,
        fit_ood,
        pixel_stats,
        pooled,
        probe_images,
    )

    if fit is not None:
        fit = fit[fit["label"].isin(predictor.bundle.classes)]
    if fit is not None and len(fit):
        fit = balanced_sample(fit, targets.ood_fit_images, targets.seed)
        fit_run = run_table(predictor, fit, progress=progress, tta=False)
        features, pixels = fit_run.features[fit_run.ok], fit_run.pixels[fit_run.ok]
        fitted_on = f"{len(features)} training images, classes balanced as far as possible"
    else:  # no training part: fit and threshold on the same images (optimistic)
        features, pixels = val_run.features[val_run.ok], val_run.pixels[val_run.ok]
        fitted_on = f"{len(features)} validation images (no training part given)"
    detector = fit_ood(features, targets.ood_k, pixels)
    val_features, val_pixels = val_run.features[val_run.ok], val_run.pixels[val_run.ok]
    probes = probe_images()
    batch = np.stack([predictor.prepare(image) for image in probes.values()])
    _, fmap = predictor.forward(batch, tta=False)
    probe_features, probe_pixels = pooled(fmap), pixel_stats(batch, predictor.pre)
    # each image is scored once; the thresholds are chosen on these scores, then applied
    val_scores, val_colour = detector.score(val_features), detector.colour_score(val_pixels)
    probe_scores = detector.score(probe_features)
    probe_colour = detector.colour_score(probe_pixels)
    detector.threshold, detector.colour_threshold, choice = choose_thresholds(
        val_scores,
        val_colour,
        probe_scores,
        probe_colour,
        [bool(r) for r in detector.pixel_reasons(probe_pixels)],
        targets.ood_quantiles,
        targets.ood_colour_quantiles,
        targets.ood_max_val_reject,
        val_pixel_caught=[bool(r) for r in detector.pixel_reasons(val_pixels)],
    )
    not_skin, reasons = detector.decide(val_scores, val_colour, val_pixels)
    caught, probe_reasons = detector.decide(probe_scores, probe_colour, probe_pixels)
    chosen = choice["chosen"]
    cap_note = "" if choice["cap_met"] else "; none kept under that cap, so the fewest skin rejects"
    report = {
        "rule": (
            f"not skin if a flat frame (pixel std < {detector.min_pixel_std:g}), pixel noise "
            f"(neighbour correlation < {detector.min_neighbour_corr:g}), a greyscale frame "
            f"(colour spread < {detector.min_colour:g}), an OOD score above the "
            f"{chosen['quantile']:.1%} quantile of validation skin images, or a colour "
            f"score above their {chosen['colour_quantile']:.1%} quantile (of the pairs of "
            f"quantiles that rejected at most {targets.ood_max_val_reject:.1%} of "
            f"validation skin images, the one that caught the most probe images, then "
            f"rejected the fewest skin images{cap_note})"
        ),
        "threshold_choice": choice,
        "threshold": detector.threshold,
        "colour_threshold": detector.colour_threshold,
        # validation skin images rejected by each judge (the first that fires)
        "val_rejected_by": _reason_counts(reasons),
        "k": detector.k,
        "fitted_on": fitted_on,
        "val_false_reject": ood_rates(not_skin, val_labels, predictor.bundle.classes),
        # photos, documents, noise and blank frames (`ood.probe_images`) called "not skin"
        "probes_rejected": f"{int(caught.sum())}/{len(caught)}",
        "probes_missed": [name for name, hit in zip(probes, caught) if not hit],
        "probes_rejected_by": dict(zip(probes, (r.split(" (")[0] for r in probe_reasons))),
    }
    return detector, report


def _reason_counts(reasons: list[str]) -> dict[str, int]:
    """Counts of not-skin reasons by kind (the text before the numbers)."""
    kinds = [r.split(" (")[0] for r in reasons if r]
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


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
    from dermalens.evaluate import run_table
    from dermalens.ood import save_ood
    from dermalens.predict import Predictor

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
        # the mean of calibrated members' probabilities: nothing to refit (dermalens.ensemble)
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
    malignant = np.array(bundle.malignant)
    metrics = {
        "calibration": {
            **_calibration(logits, labels, temperature, bias, t_only, out),
            "tta": tta,
        },
        "abstention": _abstention(probs, answers, labels, targets, out),
        "triage": _triage(probs, labels, bundle.classes, malignant, targets),
    }
    if bundle.is_ensemble:
        metrics["calibration"]["rule"] = (
            "ensemble: the mean of its members' calibrated probabilities, not refitted"
        )
    bundle.thresholds["uncertain_below"] = metrics["abstention"]["uncertain_below"]
    if "threshold" in metrics["triage"]:
        bundle.thresholds["triage_malignant"] = metrics["triage"]["threshold"]
    if fit_ood:
        detector, metrics["ood"] = _ood(predictor, run, labels, fit, targets, progress)
        save_ood(bundle, detector)
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
    from dermalens.data.check import drop_duplicate_extras
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import load_split
    from dermalens.evaluate import record_test as record

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
