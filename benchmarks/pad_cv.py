"""Patient-grouped 5-fold cross-validation of one recipe on PAD-UFES-20.

    python benchmarks/pad_cv.py splits                      # benchmarks/splits/pad-ufes20-*.csv
    python benchmarks/pad_cv.py train --prefix NAME [--folds 0 1 ...] key=value ...
    python benchmarks/pad_cv.py report --prefix NAME [--out benchmarks/results/pad-cv-NAME.json]

`splits` puts every patient in one of 5 folds (stratified by the patient's majority label,
seed 0). For fold k the test part is fold k; a fifth of the other patients (stratified and
grouped again) is the validation part, which picks the best epoch and fits calibration and
thresholds; the rest trains. `pad-ufes20-final.csv` holds no test part: train on 4/5 of the
patients, validate on 1/5, for the shipped model.

`train` runs `dermalens train` (the library call) once per fold with the given settings,
into runs/NAME-f<k>; each run ends with its test part's predictions (eval-test and
eval-test-image-only). `report` pools the five test folds' out-of-fold predictions and gives
balanced accuracy, malignant-vs-benign AUC (classes flagged malignant: bcc, scc, mel, ack),
triage sensitivity / specificity at each fold's own validation-chosen operating point and ECE:
per-fold mean and sample sd, and 95 % bootstrap intervals over patients (pooled); overall, on
the biopsied subset and by Fitzpatrick type I-IV, with and without the clinical fields.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from dermalens.data.loaders import load_dataset
from dermalens.data.records import group_ids
from dermalens.evaluation.metrics import expected_calibration_error
from dermalens.taxonomy import is_malignant

DATA = Path("../shared/data/pad-ufes-20")
SPLITS = Path("benchmarks/splits")
FOLDS = 5
SEED = 0
KEYS = ("balanced_accuracy", "malignant_auc", "sensitivity", "specificity", "ece")


def fold_of(table: pd.DataFrame, seed: int = SEED) -> pd.Series:
    """Fold number (0..4) of every image; a patient's images share one fold."""
    groups = group_ids(table).to_numpy()
    folds = np.full(len(table), -1)
    cv = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(table, table["label"], groups)):
        folds[test] = k
    return pd.Series(folds, index=table.index)


def val_within(table: pd.DataFrame, keep: np.ndarray, seed: int) -> np.ndarray:
    """Mask of a grouped, stratified fifth of the `keep` rows: the validation part."""
    rows = np.flatnonzero(keep)
    sub = table.iloc[rows]
    cv = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    _, val = next(cv.split(sub, sub["label"], group_ids(sub).to_numpy()))
    mask = np.zeros(len(table), dtype=bool)
    mask[rows[val]] = True
    return mask


def write_splits(data: Path = DATA, out: Path = SPLITS) -> list[Path]:
    table = load_dataset(data).table.reset_index(drop=True)
    table["group"] = group_ids(table)
    folds = fold_of(table).to_numpy()
    written = []
    for k in range(FOLDS):
        split = np.where(folds == k, "test", "train").astype(object)
        split[val_within(table, folds != k, SEED + 1 + k)] = "val"
        written.append(_save(table, split, out / f"pad-ufes20-cv{k}.csv"))
    split = np.full(len(table), "train", dtype=object)
    split[val_within(table, np.ones(len(table), dtype=bool), SEED)] = "val"
    written.append(_save(table, split, out / "pad-ufes20-final.csv"))
    return written


def _save(table: pd.DataFrame, split: np.ndarray, path: Path) -> Path:
    frame = table[["image_id", "label", "group"]].assign(split=split)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    counts = frame.groupby("split").agg(images=("image_id", "size"), patients=("group", "nunique"))
    print(path, counts.to_dict("index"))
    return path


def train_folds(prefix: str, folds: list[int], settings: list[str], out: str = "runs") -> None:
    """One `dermalens train` run per fold (skipping folds whose bundle is already there)."""
    from dermalens.config import make_config
    from dermalens.training.train import train  # PyTorch: only this sub-command needs it

    for k in folds:
        if (Path(out) / f"{prefix}-f{k}" / "bundle" / "bundle.json").is_file():
            print(f"fold {k}: done before, skipped", flush=True)
            continue
        fixed = [f"data={DATA}", f"split_file={SPLITS}/pad-ufes20-cv{k}.csv", f"out={out}"]
        cfg = make_config(overrides=[*fixed, *settings, f"name={prefix}-f{k}"])
        t0 = time.time()
        train(cfg)
        print(f"fold {k}: {time.time() - t0:.0f} s", flush=True)


def fold_predictions(prefix: str, out: str = "runs", image_only: bool = False) -> pd.DataFrame:
    """The five test folds' predictions with each fold's triage threshold and the table's
    patient, biopsy and Fitzpatrick columns."""
    table = load_dataset(DATA).table.set_index("image_id")
    frames = []
    for k in range(FOLDS):
        run = Path(out) / f"{prefix}-f{k}"
        name = "eval-test-image-only" if image_only else "eval-test"
        preds = pd.read_csv(run / name / "predictions.csv", dtype={"image_id": str})
        thresholds = json.loads((run / "bundle" / "bundle.json").read_text())["thresholds"]
        preds["fold"], preds["triage_at"] = k, thresholds["triage_malignant"]
        frames.append(preds)
    preds = pd.concat(frames, ignore_index=True)
    extra = table.loc[preds["image_id"], ["patient_id", "biopsed", "fitspatrick"]]
    return pd.concat([preds, extra.reset_index(drop=True)], axis=1)


def scores(preds: pd.DataFrame) -> dict[str, float]:
    """Balanced accuracy, malignant AUC, triage sensitivity / specificity, ECE."""
    classes = [c.removeprefix("p_") for c in preds.columns if c.startswith("p_")]
    classes.remove("malignant")
    probs = preds[[f"p_{c}" for c in classes]].to_numpy()
    labels = preds["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    is_mal = preds["label"].map(is_malignant).astype(bool).to_numpy()
    flagged = preds["p_malignant"].to_numpy() >= preds["triage_at"].to_numpy()
    both = 0 < is_mal.sum() < len(is_mal)
    return {
        "n": len(preds),
        "balanced_accuracy": balanced_accuracy_score(preds["label"], preds["predicted"]),
        "malignant_auc": roc_auc_score(is_mal, preds["p_malignant"]) if both else np.nan,
        "sensitivity": flagged[is_mal].mean() if is_mal.any() else np.nan,
        "specificity": (~flagged[~is_mal]).mean() if (~is_mal).any() else np.nan,
        "ece": expected_calibration_error(labels, probs)[0],
    }


def bootstrap(preds: pd.DataFrame, reps: int = 1000, seed: int = 0) -> dict[str, tuple]:
    """95 % percentile intervals, resampling patients (all of a patient's images at once)."""
    rng = np.random.default_rng(seed)
    by_patient = preds.groupby("patient_id").indices
    groups = list(by_patient.values())
    draws = []
    for _ in range(reps):
        pick = rng.integers(0, len(groups), len(groups))
        draws.append(scores(preds.iloc[np.concatenate([groups[i] for i in pick])]))
    frame = pd.DataFrame(draws)
    return {k: tuple(np.nanpercentile(frame[k], [2.5, 97.5])) for k in KEYS}


def summarise(preds: pd.DataFrame, reps: int = 1000) -> dict:
    per_fold = pd.DataFrame([scores(f) for _, f in preds.groupby("fold")])
    out = {"pooled": scores(preds), "folds": per_fold.to_dict("list")}
    out["mean"] = {k: float(per_fold[k].mean()) for k in KEYS}
    out["sd"] = {k: float(per_fold[k].std(ddof=1)) for k in KEYS}
    out["ci95"] = bootstrap(preds, reps)
    return out


def report(prefix: str, out: str = "runs", reps: int = 1000) -> dict:
    """Every number of the module docstring, as a JSON-ready dict."""
    result: dict = {"prefix": prefix}
    for input_name, image_only in (("image+clinical", False), ("image only", True)):
        preds = fold_predictions(prefix, out, image_only)
        part = {"all": summarise(preds, reps)}
        part["biopsied"] = summarise(preds[preds["biopsed"] == 1.0], reps)
        part["fitzpatrick"] = {
            f"type {'I' * t if t < 4 else 'IV'}": {
                **scores(sub := preds[preds["fitspatrick"] == t]),
                "ci95": bootstrap(sub, reps),
            }
            for t in (1, 2, 3, 4)
        }
        result[input_name] = part
    return result


def markdown(result: dict) -> str:
    """The report as Markdown tables (mean ± sd over folds [pooled 95 % CI])."""
    lines = []
    for input_name in ("image+clinical", "image only"):
        part = result[input_name]
        lines += [f"**{input_name}**", "", "| subset | n | " + " | ".join(KEYS) + " |"]
        lines.append("|---" * (len(KEYS) + 2) + "|")
        for subset in ("all", "biopsied"):
            s = part[subset]
            cells = [
                f"{s['mean'][k]:.3f} ± {s['sd'][k]:.3f} [{s['ci95'][k][0]:.2f}, "
                f"{s['ci95'][k][1]:.2f}]"
                for k in KEYS
            ]
            lines.append(f"| {subset} | {s['pooled']['n']} | " + " | ".join(cells) + " |")
        for name, s in part["fitzpatrick"].items():
            cells = [f"{s[k]:.3f} [{s['ci95'][k][0]:.2f}, {s['ci95'][k][1]:.2f}]" for k in KEYS]
            lines.append(f"| Fitzpatrick {name} (pooled) | {s['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("splits", help="write the fold split CSVs")
    t = sub.add_parser("train", help="train one run per fold")
    t.add_argument("--prefix", required=True, help="run folders are runs/PREFIX-f<k>")
    t.add_argument("--folds", default="0,1,2,3,4", help="comma-separated fold numbers")
    t.add_argument("settings", nargs="*", help="key=value training settings")
    r = sub.add_parser("report", help="pool the folds' test predictions")
    r.add_argument("--prefix", required=True)
    r.add_argument("--reps", type=int, default=1000, help="bootstrap draws")
    r.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    if args.command == "splits":
        write_splits()
    elif args.command == "train":
        train_folds(args.prefix, [int(k) for k in args.folds.split(",")], args.settings)
    else:
        result = report(args.prefix, reps=args.reps)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1, default=float))
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
