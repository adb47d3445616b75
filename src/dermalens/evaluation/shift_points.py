"""Operating points under acquisition shift: how they move, and a triage point that holds.

    runs = corrupted_runs(predictor, val, SHIFT_CORRUPTIONS, (1, 2, 3))
    threshold, report = triage_under_shift(p_mal, is_mal, runs, sensitivity=0.95)

`corrupted_runs` passes copies of validation images, each corrupted by one corruption of
`evaluation.corruptions` at one severity (seeded per image), through the same predictor
path as `evaluate` (metadata fed, calibrated probabilities, the OOD check). `movement`
says, per condition, how far the triage threshold that would keep the target sensitivity,
the sensitivity at the current threshold, the "uncertain" share and the ECE move.
`triage_under_shift` chooses the triage threshold on clean and corrupted validation
malignant images pooled (`calibrate --triage-under-shift`), so that the target
sensitivity holds on images that drift the way the corruptions drift; its cost is lower
specificity, to be measured on the test part. Images turned away as "not skin" are left
out of the pool: no threshold brings them back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermalens import patient
from dermalens.evaluation import corruptions as C
from dermalens.evaluation.metrics import expected_calibration_error
from dermalens.evaluation.thresholds import choose_triage_threshold
from dermalens.imageio import ImageError, load_image
from dermalens.runtime.predictor import Predictor

SEVERITIES = (1, 2, 3)  # the goal: triage sensitivity >= 0.90 up to severity 3


def corrupted_runs(
    predictor: Predictor,
    table: pd.DataFrame,
    corruptions: tuple[str, ...] = tuple(C.CORRUPTIONS),
    severities: tuple[int, ...] = SEVERITIES,
    batch_size: int = 64,
) -> dict[str, dict[str, np.ndarray]]:
    """'name sN' -> {'probs', 'not_skin', 'labels'} for every corruption and severity."""
    index = {c: i for i, c in enumerate(predictor.bundle.classes)}
    images, labels, metas = [], [], []
    fields = tuple(predictor.bundle.metadata_fields) or patient.FIELDS
    for row in table.itertuples(index=False):
        try:
            images.append(load_image(row.path))
        except ImageError:
            continue
        labels.append(index[row.label])
        metas.append(patient.encode_fields(fields, patient.row_values(row, fields)))
    seeds = [C.image_seed(str(i)) for i in table["image_id"]]
    use_meta = bool(predictor.bundle.metadata_fields)
    out = {}
    for name in corruptions:
        for severity in severities:
            probs, away = [], []
            for start in range(0, len(images), batch_size):
                part = range(start, min(start + batch_size, len(images)))
                shifted = [C.apply(images[i], name, severity, seed=seeds[i]) for i in part]
                batch = np.stack([predictor.prepare(image) for image in shifted])
                meta = np.stack([metas[i] for i in part]) if use_meta else None
                logits, fmap = predictor.forward(batch, meta, tta=False)
                probs.append(predictor.calibrated(logits))
                ood = predictor.ood_check(batch, fmap)
                away.append(np.zeros(len(batch), bool) if ood is None else ood[1])
            out[f"{name} s{severity}"] = {
                "probs": np.concatenate(probs),
                "not_skin": np.concatenate(away),
                "labels": np.asarray(labels, int),
            }
    return out


def movement(
    predictor: Predictor, runs: dict[str, dict[str, np.ndarray]], sensitivity: float
) -> list[dict]:
    """Per condition: the threshold keeping `sensitivity`, sensitivity at the current one,
    the uncertain share and the ECE (on whatever labels the runs hold)."""
    rows = []
    mask = predictor.malignant_mask
    for name, run in runs.items():
        probs, labels, away = run["probs"], run["labels"], run["not_skin"]
        is_mal, p_mal = mask[labels], probs[:, mask].sum(axis=1)
        answers = predictor.decide(probs)
        unsure = probs[np.arange(len(labels)), answers] < predictor.uncertain_below
        kept = is_mal & ~away
        needed = choose_triage_threshold(p_mal, kept, sensitivity) if kept.any() else None
        rows.append(
            {
                "condition": name,
                "threshold_for_target": needed,
                "sensitivity_at_current": float(
                    ((p_mal >= predictor.triage_at) & ~away)[is_mal].mean()
                )
                if is_mal.any()
                else None,
                "uncertain": float((unsure & ~away).mean()),
                "turned_away": float(away.mean()),
                "ece": expected_calibration_error(labels, probs)[0],
            }
        )
    return rows


def triage_under_shift(
    p_mal_clean: np.ndarray,
    is_mal_clean: np.ndarray,
    runs: dict[str, dict[str, np.ndarray]],
    malignant_mask: np.ndarray,
    sensitivity: float,
) -> tuple[float, dict]:
    """The highest threshold flagging >= `sensitivity` of the clean and corrupted malignant
    validation images pooled (turned-away images left out), and its report."""
    pooled = [np.asarray(p_mal_clean)[np.asarray(is_mal_clean, bool)]]
    for run in runs.values():
        keep = malignant_mask[run["labels"]] & ~run["not_skin"]
        pooled.append(run["probs"][keep][:, malignant_mask].sum(axis=1))
    scores = np.concatenate(pooled)
    threshold = choose_triage_threshold(scores, np.ones(len(scores), bool), sensitivity)
    clean = choose_triage_threshold(p_mal_clean, np.asarray(is_mal_clean, bool), sensitivity)
    return threshold, {
        "rule": (
            f"the highest threshold flagging >= {sensitivity:.0%} of clean and corrupted "
            f"validation malignant images pooled ({len(runs)} corruption x severity "
            f"conditions; images turned away left out)"
        ),
        "threshold": threshold,
        "clean_only_threshold": clean,
        "pooled_malignant_images": int(len(scores)),
        "conditions": sorted(runs),
    }


def triage_step(predictor: Predictor, detector, val: pd.DataFrame, probs, labels, targets) -> dict:
    """`calibrate`'s triage entries with the threshold chosen under shift (rows of `val`
    aligned with `probs` and `labels`; `detector`: the OOD check just fitted, or None;
    `targets`: `calibrate.Targets`). The threshold depends on malignant images only, so
    only those are corrupted; specificity is still measured on clean validation."""
    predictor.ood = detector  # corrupted copies go through the bundle's OOD check
    mask = predictor.malignant_mask
    is_mal, p_mal = mask[labels], probs[:, mask].sum(axis=1)
    runs = corrupted_runs(predictor, val.reset_index(drop=True)[is_mal])
    threshold, report = triage_under_shift(p_mal, is_mal, runs, mask, targets.sensitivity)
    flagged = p_mal >= threshold
    return {
        "rule": report["rule"],
        "threshold": threshold,
        "sensitivity": float(flagged[is_mal].mean()),
        "specificity": float((~flagged[~is_mal]).mean()),
        "under_shift": report,
        "movement": movement(predictor, runs, targets.sensitivity),
    }
