"""Is model B better than model A on the same test images? A paired, lesion-grouped bootstrap.

    python benchmarks/compare.py runs/a/eval-test/predictions.csv \
        runs/b/eval-test/predictions.csv --data ../shared/data/ham10000 [--resamples 1000]

Reads two `predictions.csv` files written by `dermalens evaluate` (or by training's test
report) on the same images, and prints, for accuracy, balanced accuracy, macro F1, macro AUC
and ECE: A, B, the difference B - A, its 95% bootstrap interval and the share of resamples in
which B is better. Each resample draws whole lesions (patients where known, as the dataset
at `--data` groups them) with replacement, because images of one lesion are not independent.
Without `--data` it resamples single images and says so. Only images in both files count;
files that share no image, or disagree on a label, are refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dermalens.evaluation.metrics import PAIRED_KEYS, paired_bootstrap


def read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file")
    table = pd.read_csv(path)
    missing = [c for c in ("image_id", "label", "predicted") if c not in table.columns]
    if missing:
        raise SystemExit(f"error: {path}: missing column(s) {', '.join(missing)}")
    if not any(c.startswith("p_") and c != "p_malignant" for c in table.columns):
        raise SystemExit(f"error: {path}: no class probability columns (p_<class>)")
    return table.drop_duplicates("image_id").set_index("image_id")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="predictions.csv of model A")
    parser.add_argument("b", type=Path, help="predictions.csv of model B")
    parser.add_argument("--data", default=None, help="dataset folder, for lesion groups")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    a, b = read_predictions(args.a), read_predictions(args.b)
    classes = [c[2:] for c in a.columns if c.startswith("p_") and c != "p_malignant"]
    b_classes = [c[2:] for c in b.columns if c.startswith("p_") and c != "p_malignant"]
    if classes != b_classes:
        raise SystemExit(f"error: the files have different classes: {classes} and {b_classes}")
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        raise SystemExit("error: the two files share no image_id")
    a, b = a.loc[shared], b.loc[shared]
    clash = (a["label"] != b["label"]).sum()
    if clash:
        raise SystemExit(f"error: {clash} shared image(s) have different labels in the two files")
    code = {c: i for i, c in enumerate(classes)}
    seen = set(a["label"]) | set(a["predicted"]) | set(b["predicted"])
    unknown = sorted(seen - set(code))
    if unknown:
        raise SystemExit(f"error: labels or answers outside the classes {classes}: {unknown}")

    groups, grouping = None, "single images (no --data: images of one lesion are not independent)"
    if args.data:
        from dermalens.data.loaders import load_dataset
        from dermalens.data.records import group_ids

        table = load_dataset(args.data).table.set_index("image_id")
        known = shared.intersection(table.index)
        if len(known) != len(shared):
            raise SystemExit(
                f"error: {len(shared) - len(known)} image(s) are not in the dataset at {args.data}"
            )
        groups = group_ids(table.loc[shared].reset_index()).to_numpy()
        grouping = f"{len(set(groups))} lesion/patient groups from {args.data}"

    labels = a["label"].map(code).to_numpy()
    probs = [t[[f"p_{c}" for c in classes]].to_numpy(float) for t in (a, b)]
    preds = [t["predicted"].map(code).to_numpy() for t in (a, b)]
    result = paired_bootstrap(
        labels, (probs[0], preds[0]), (probs[1], preds[1]), groups, args.resamples, args.seed
    )
    print(f"A: {args.a}\nB: {args.b}")
    print(f"{len(shared)} shared images; {args.resamples} resamples of {grouping}\n")
    print("| metric | A | B | B - A | 95% interval | share of resamples B better |")
    print("|---|---|---|---|---|---|")
    for key in PAIRED_KEYS:
        r = result[key]
        print(
            f"| {key} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} | "
            f"[{r['lo']:+.3f}, {r['hi']:+.3f}] | {r['p_b_better']:.2f} |"
        )
    if np.isnan([r["lo"] for r in result.values()]).any():
        print("(n/a where a metric is undefined on every resample)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
