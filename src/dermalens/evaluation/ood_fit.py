"""Fitting the out-of-distribution check (`runtime.ood`): the training images' feature and
colour banks, the probe images, and the thresholds chosen on validation skin images."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from dermalens.bundle import Bundle
from dermalens.evaluation.evaluate import ood_rates, run_table
from dermalens.files import sha256
from dermalens.runtime.ood import (
    OOD_FILE,
    OodDetector,
    knn_distance,
    pixel_stats,
    pooled,
    unit_rows,
)


def _fit_bank(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Unit rows in float16 and the median leave-one-out k-NN distance among them."""
    bank = unit_rows(x).astype(np.float16)
    stored = bank.astype(np.float32)  # what the scores will compare against
    scale = float(np.median(knn_distance(stored, stored, k, skip_self=True)))
    return bank, scale if scale > 1e-9 else 1.0


def fit_ood(features: np.ndarray, k: int = 10, pixels: np.ndarray | None = None) -> OodDetector:
    """Fit on pooled features (N x C) of skin images (ideally class-balanced), and on their
    colours when `pixels` (the same images' `pixel_stats`) is given."""
    x = np.asarray(features, np.float32)
    keep = np.isfinite(x).all(axis=1)
    if pixels is not None:
        pixels = np.asarray(pixels, np.float32)
        if len(pixels) != len(x):
            raise ValueError(f"OOD fit: {len(x)} feature rows but {len(pixels)} pixel rows")
        keep &= np.isfinite(pixels).all(axis=1)
    if keep.sum() < k + 2:
        raise ValueError(f"OOD fit needs at least k + 2 = {k + 2} images; got {int(keep.sum())}")
    bank, scale = _fit_bank(x[keep], k)
    if pixels is None:
        return OodDetector(bank, k, scale)
    colour_bank, colour_scale = _fit_bank(pixels[keep, 3:], k)
    return OodDetector(bank, k, scale, colour_bank=colour_bank, colour_scale=colour_scale)


def probe_images() -> dict[str, np.ndarray]:
    """Images that are not dermoscopic skin: photos and a document page from scikit-image
    (when installed), a rendered text page, pixel noise and blank frames."""
    rng = np.random.default_rng(0)
    page = Image.new("RGB", (600, 450), "white")
    draw = ImageDraw.Draw(page)
    for line in range(20):
        draw.text((30, 20 + 21 * line), f"Invoice 2024-{line:03d}  total due: EUR {97 * line}.00")
    out = {
        "rendered text": np.asarray(page),
        "noise": rng.integers(0, 256, (450, 600, 3), dtype=np.uint8),
        "black frame": np.zeros((450, 600, 3), np.uint8),
        "white frame": np.full((450, 600, 3), 255, np.uint8),
    }
    try:
        from skimage import data  # optional: the dev extra
    except ImportError:
        return out
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "page", "text", "coins"):
        out[name] = getattr(data, name)()
    return out


def choose_threshold(scores: np.ndarray, quantile: float = 0.99) -> float:
    """Score above which an image is not skin: the `quantile` of held-out skin scores."""
    return float(np.quantile(np.asarray(scores, np.float64), quantile))


def choose_thresholds(
    val_scores: np.ndarray,
    val_colour: np.ndarray,
    probe_scores: np.ndarray,
    probe_colour: np.ndarray,
    probe_pixel_caught: np.ndarray,
    quantiles: tuple[float, ...],
    colour_quantiles: tuple[float, ...],
    max_val_reject: float = 1.0,
    val_pixel_caught: np.ndarray | None = None,
) -> tuple[float, float, dict]:
    """Feature and colour thresholds from a grid of validation quantiles.

    Only pairs that reject at most `max_val_reject` of the validation skin images are
    eligible. Among them, the pair that rejects the most probe images (known non-skin)
    and then the fewest validation skin images wins (ties: the higher quantiles). If no
    pair keeps under the cap, the pair that rejects the fewest skin images is kept and the
    report says the cap was not met. `val_pixel_caught` flags validation images the pixel
    tests already reject; they count as rejected under every pair. Returns (threshold,
    colour threshold, report)."""
    val_scores, val_colour = np.asarray(val_scores), np.asarray(val_colour)
    probe_scores, probe_colour = np.asarray(probe_scores), np.asarray(probe_colour)
    probe_pixel_caught = np.asarray(probe_pixel_caught, bool)
    if val_pixel_caught is None:
        val_pixel_caught = np.zeros(len(val_scores), bool)
    val_pixel_caught = np.asarray(val_pixel_caught, bool)
    if len(val_pixel_caught) != len(val_scores) or len(probe_pixel_caught) != len(probe_scores):
        raise ValueError(
            f"choose_thresholds: {len(val_scores)} validation scores but "
            f"{len(val_pixel_caught)} pixel flags, {len(probe_scores)} probe scores but "
            f"{len(probe_pixel_caught)} pixel flags"
        )
    if not quantiles or not colour_quantiles:
        raise ValueError("choose_thresholds: empty quantile grid")
    if not 0.0 <= max_val_reject <= 1.0:
        raise ValueError(
            f"choose_thresholds: max_val_reject must lie in [0, 1], got {max_val_reject}"
        )
    grid = []
    for q in quantiles:
        for qc in colour_quantiles:
            limit, colour_limit = choose_threshold(val_scores, q), choose_threshold(val_colour, qc)
            caught = probe_pixel_caught | (probe_scores > limit) | (probe_colour > colour_limit)
            rejected = val_pixel_caught | (val_scores > limit) | (val_colour > colour_limit)
            grid.append(
                {
                    "quantile": q,
                    "colour_quantile": qc,
                    "threshold": limit,
                    "colour_threshold": colour_limit,
                    "probes_caught": int(caught.sum()),
                    "val_rejected": float(rejected.mean()),
                }
            )
    eligible = [g for g in grid if g["val_rejected"] <= max_val_reject]
    cap_met = bool(eligible)
    if cap_met:
        best = min(
            eligible,
            key=lambda g: (
                -g["probes_caught"],
                g["val_rejected"],
                -g["quantile"],
                -g["colour_quantile"],
            ),
        )
    else:
        best = min(grid, key=lambda g: (g["val_rejected"], -g["probes_caught"]))
    report = {"chosen": best, "max_val_reject": max_val_reject, "cap_met": cap_met, "grid": grid}
    return best["threshold"], best["colour_threshold"], report


def save_ood(bundle: Bundle, detector: OodDetector) -> str:
    """Write `ood.npz` atomically, record its hash and threshold; returns the hash.

    The caller saves the description (`bundle.save_description()`).
    """
    path = bundle.file(OOD_FILE)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{OOD_FILE}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(detector.to_bytes())
    os.replace(tmp, path)
    digest = sha256(path)
    bundle.info["ood_sha256"] = digest
    bundle.thresholds["ood_above"] = float(detector.threshold)
    return digest


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


def fit_ood_check(
    predictor, val_run, val_labels, fit: pd.DataFrame | None, targets, progress
) -> tuple:
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
