"""Do the operating points survive acquisition shift? The triage threshold chosen on clean
validation images against one chosen on clean + corrupted validation images.

    python benchmarks/operating_points.py src/dermalens/bundled/default ../shared/data/ham10000 \
        --split-file benchmarks/splits/ham10000-seed0.csv \
        --external ../shared/data/isic2019-sample --out benchmarks/results

1. Validation (the split's val part): clean probabilities of every image; every malignant
   image corrupted by each corruption at --severities (`evaluation.shift_points`). Per
   condition: the threshold that would keep --sensitivity, the sensitivity at the shipped
   threshold, the uncertain and turned-away shares. The pooled threshold
   (`triage_under_shift`, what `calibrate --triage-under-shift` ships) is chosen here.
2. Test part, clean: sensitivity and specificity at both thresholds (the cost).
3. Test part, malignant images corrupted the same way: sensitivity at both thresholds.
4. Each --external set (a check, never used to choose): sensitivity (and specificity where
   it has benign images) at both thresholds.
A malignant image turned away as "not skin" counts as missed throughout.
Writes operating-points-NAME.json; prints a table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluation.calibrate import Targets
from dermalens.evaluation.evaluate import run_table
from dermalens.evaluation.shift_points import corrupted_runs, movement, triage_under_shift
from dermalens.files import atomic_write_text, now
from dermalens.runtime.predictor import Predictor


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--split-file", required=True)
    p.add_argument("--external", nargs="*", default=[])
    p.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--sensitivity", type=float, default=Targets().sensitivity)
    p.add_argument(
        "--limit", type=int, default=0, help="malignant images to corrupt per part (0: all)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/operating-points"))
    return p.parse_args(argv)


def clean(predictor: Predictor, table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(malignant), is malignant, turned away) of a table's readable images."""
    run = run_table(predictor, table, progress=False, tta=False)
    ok = run.ok
    probs = predictor.calibrated(run.logits)[ok]
    labels = table["label"].map({c: i for i, c in enumerate(predictor.bundle.classes)})
    is_mal = predictor.malignant_mask[labels.to_numpy()[ok]]
    away = predictor.ood.check(run.features[ok], run.pixels[ok])[1] if predictor.ood else None
    away = np.zeros(int(ok.sum()), bool) if away is None else away
    return probs[:, predictor.malignant_mask].sum(axis=1), is_mal, away


def rates(p_mal, is_mal, away, threshold) -> dict:
    caught = (p_mal >= threshold) & ~away
    return {
        "sensitivity": float(caught[is_mal].mean()) if is_mal.any() else None,
        "specificity": float((~caught & ~away)[~is_mal].mean()) if (~is_mal).any() else None,
    }


def corrupted_sensitivity(predictor, runs, threshold) -> dict:
    mask = predictor.malignant_mask
    out = {}
    for name, run in runs.items():
        p_mal = run["probs"][:, mask].sum(axis=1)
        out[name] = float(((p_mal >= threshold) & ~run["not_skin"]).mean())
    return out


def malignant(predictor, table, limit: int):
    """The table's malignant rows, thinned to `limit` evenly spaced ones (by class, id)."""
    rows = table[predictor.malignant_mask[table["label"].map(predictor.bundle.classes.index)]]
    rows = rows.sort_values(["label", "image_id"])
    if limit and limit < len(rows):
        rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))]
    return rows.reset_index(drop=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    predictor = Predictor(args.model, threads=args.threads)
    severities = tuple(args.severities)
    table = load_split(load_dataset(args.data), Path(args.split_file))
    val = table[table["split"] == "val"].reset_index(drop=True)
    test = drop_duplicate_extras(table)
    test = test[test["split"] == "test"].reset_index(drop=True)
    mal = predictor.malignant_mask
    val_p, val_mal, _ = clean(predictor, val)
    val_malignant = malignant(predictor, val, args.limit)
    val_runs = corrupted_runs(predictor, val_malignant, severities=severities)
    shipped = predictor.triage_at
    pooled, report = triage_under_shift(val_p, val_mal, val_runs, mal, args.sensitivity)
    test_p, test_mal, test_away = clean(predictor, test)
    test_malignant = malignant(predictor, test, args.limit)
    test_runs = corrupted_runs(predictor, test_malignant, severities=severities)
    result = {
        "command": shlex.join(["python", "benchmarks/operating_points.py", *sys.argv[1:]]),
        "model": predictor.bundle.version,
        "shipped_threshold": shipped,
        "pooled_threshold": pooled,
        "choice": report,
        "val_movement": movement(predictor, val_runs, args.sensitivity),
        "test_clean": {
            "shipped": rates(test_p, test_mal, test_away, shipped),
            "pooled": rates(test_p, test_mal, test_away, pooled),
        },
        "test_corrupted_sensitivity": {
            "shipped": corrupted_sensitivity(predictor, test_runs, shipped),
            "pooled": corrupted_sensitivity(predictor, test_runs, pooled),
        },
        "external": {},
    }
    for ext in args.external:
        ext_table = load_dataset(ext).table
        ext_table = ext_table[ext_table["label"].isin(predictor.bundle.classes)]
        p, m, away = clean(predictor, ext_table.reset_index(drop=True))
        result["external"][Path(ext).name] = {
            "shipped": rates(p, m, away, shipped),
            "pooled": rates(p, m, away, pooled),
            "n": int(len(p)),
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["at"] = now()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"operating-points-{Path(args.model).name}.json"
    atomic_write_text(path, json.dumps(result, indent=2))
    print(f"triage threshold: shipped {shipped:.4f}, pooled clean + corrupted val {pooled:.4f}")
    for key in ("shipped", "pooled"):
        corr = result["test_corrupted_sensitivity"][key]
        worst = min(corr.items(), key=lambda kv: kv[1])
        print(
            f"{key:>8}: test clean {result['test_clean'][key]}, corrupted test sensitivity "
            f"mean {np.mean(list(corr.values())):.3f} (worst {worst[0]} {worst[1]:.3f}), "
            f"below 0.90: {sum(v < 0.9 for v in corr.values())} of {len(corr)}"
        )
        for name, ext in result["external"].items():
            print(f"          external {name}: {ext[key]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
