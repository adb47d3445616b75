"""Results by patient group: age band, sex, body site and Fitzpatrick skin type.

    rows = subgroup_metrics(table, labels, probs, answers, malignant, triage_at, not_skin)

`evaluate` stores them as `metrics["subgroups"]` and `subgroups.csv`, for every field the
data records (HAM10000: age, sex, site; PAD-UFES-20 also the Fitzpatrick type, its
`fitspatrick` column). Each group gets its image count, malignant and benign counts,
balanced accuracy, malignant AUC and triage sensitivity / specificity at the bundle's
threshold (a malignant lesion turned away as "not skin" counts as missed), each with a 95%
bootstrap interval that resamples whole lesions (patients where known) within the group.
A group with fewer than SMALL_IMAGES images, or fewer than SMALL_MALIGNANT malignant ones
when it has any, is marked `small`: its intervals are wide and its numbers move a lot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

AGE_BANDS = ((0, 30, "0-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"))
OLDEST = (75, "75+")
FITZPATRICK = ("fitzpatrick", "fitspatrick")  # PAD-UFES-20's CSV spells it the second way
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
SMALL_IMAGES = 30
SMALL_MALIGNANT = 10
REPS = 500  # bootstrap resamples per group
METRICS = ("balanced_accuracy", "malignant_auc", "sensitivity", "specificity")


def age_band(age: float) -> str:
    if age is None or not np.isfinite(age):
        return "unknown"
    for low, high, name in AGE_BANDS:
        if low <= age < high:
            return name
    return OLDEST[1]


def groupings(table: pd.DataFrame) -> dict[str, pd.Series]:
    """Field name -> each row's group, for the fields this table records (some known value)."""
    out = {}
    if table["age"].notna().any():
        out["age"] = table["age"].map(age_band)
    for field in ("sex", "site"):
        if table[field].notna().any():
            out[field] = table[field].fillna("unknown").astype(str)
    for column in FITZPATRICK:
        if column in table and pd.to_numeric(table[column], errors="coerce").notna().any():
            values = pd.to_numeric(table[column], errors="coerce")
            out["fitzpatrick"] = values.map(lambda v: ROMAN.get(v, "unknown"))
            break
    return out


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return np.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _values(labels, answers, p_mal, is_mal, caught) -> np.ndarray:
    """The METRICS of one (re)sample; NaN where undefined."""
    present = np.unique(labels)
    recalls = [np.mean(answers[labels == c] == c) for c in present]
    sens = caught[is_mal].mean() if is_mal.any() else np.nan
    spec = (~caught[~is_mal]).mean() if (~is_mal).any() else np.nan
    return np.array([np.mean(recalls), _auc(is_mal, p_mal), sens, spec])


def _interval(samples: np.ndarray) -> list:
    out = []
    for column in samples.T:
        column = column[np.isfinite(column)]
        if len(column) < 0.9 * len(samples):  # mostly undefined: no interval
            out.append(None)
        else:
            out.append([float(np.quantile(column, 0.025)), float(np.quantile(column, 0.975))])
    return out


def _clusters(table: pd.DataFrame) -> np.ndarray:
    """Resampling units: the patient where known, else the lesion, else the image."""
    units = table["image_id"].astype(str)
    for column in ("lesion_id", "patient_id"):
        if column in table:
            known = table[column].notna() & (table[column].astype(str) != "")
            units = table[column].astype(str).where(known, units)
    return pd.factorize(units)[0]


def subgroup_metrics(
    table: pd.DataFrame,
    labels: np.ndarray,
    probs: np.ndarray,
    answers: np.ndarray,
    malignant: list[bool | None],
    triage_at: float,
    not_skin: np.ndarray | None = None,
    reps: int = REPS,
    seed: int = 0,
) -> list[dict]:
    """One row per (field, group) of the readable images in `table` (rows aligned with
    `labels`, `probs`, `answers`); see the module docstring."""
    table = table.reset_index(drop=True)
    labels, answers = np.asarray(labels, int), np.asarray(answers, int)
    mask = np.array([bool(f) for f in malignant])
    p_mal = np.asarray(probs)[:, mask].sum(axis=1)
    is_mal = mask[labels]
    away = np.zeros(len(labels), bool) if not_skin is None else np.asarray(not_skin, bool)
    caught = (p_mal >= triage_at) & ~away
    units = _clusters(table)
    rng = np.random.default_rng(seed)
    rows = []
    for field, groups in groupings(table).items():
        for group in sorted(groups.unique(), key=lambda g: (g == "unknown", g)):
            idx = np.flatnonzero(groups.to_numpy() == group)
            args = (labels[idx], answers[idx], p_mal[idx], is_mal[idx], caught[idx])
            point = _values(*args)
            members = pd.Series(idx).groupby(units[idx]).apply(list).tolist()
            samples = []
            for _ in range(reps):
                pick = rng.integers(0, len(members), len(members))
                sample = np.concatenate([members[i] for i in pick])
                samples.append(
                    _values(*(a[sample] for a in (labels, answers, p_mal, is_mal, caught)))
                )
            ci = _interval(np.array(samples))
            n_mal = int(is_mal[idx].sum())
            row = {
                "field": field,
                "group": str(group),
                "n": int(len(idx)),
                "n_malignant": n_mal,
                "n_benign": int(len(idx) - n_mal),
                "small": len(idx) < SMALL_IMAGES or 0 < n_mal < SMALL_MALIGNANT,
            }
            for name, value, interval in zip(METRICS, point, ci):
                row[name] = None if not np.isfinite(value) else float(value)
                row[f"{name}_ci"] = interval if row[name] is not None else None
            rows.append(row)
    return rows


def subgroup_table(rows: list[dict]) -> pd.DataFrame:
    """The rows flat, for subgroups.csv (intervals as low and high columns)."""
    flat = []
    for row in rows:
        out = {k: v for k, v in row.items() if not k.endswith("_ci")}
        for name in METRICS:
            ci = row[f"{name}_ci"] or [None, None]
            out[f"{name}_low"], out[f"{name}_high"] = ci
        flat.append(out)
    return pd.DataFrame(flat)


def markdown(rows: list[dict]) -> str:
    """A Markdown table of the rows (the model card's), intervals in brackets."""

    def cell(row, name):
        value, ci = row[name], row[f"{name}_ci"]
        if value is None:
            return "-"
        return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"

    head = "| field | group | images (malignant) | balanced accuracy | malignant AUC |"
    lines = [head + " sensitivity | specificity |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        small = " (small)" if row["small"] else ""
        lines.append(
            f"| {row['field']} | {row['group']}{small} | {row['n']} ({row['n_malignant']}) | "
            + " | ".join(cell(row, name) for name in METRICS)
            + " |"
        )
    return "\n".join(lines)
