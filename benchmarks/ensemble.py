"""A small ensemble of bundles trained on the same lesion-grouped split, on its test part.

    python benchmarks/ensemble.py src/dermalens/bundled/default runs/ham-lite1-meta-ema/bundle \
        --data ../shared/data/ham10000 --split-file benchmarks/splits/ham10000-seed0.csv

Each bundle is evaluated alone (`dermalens.evaluation.evaluate.evaluate`, its own
calibration), then combined: the probability is the mean of the members' calibrated
probabilities, and the answer is the class with the highest mean decision score (each
member's log probability plus its decision bias, i.e. its class-weighted ranking). Only
bundles trained on the same split may be combined: a member trained on another split has
seen these test lesions.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dermalens.bundle import load_bundle
from dermalens.evaluation.evaluate import evaluate
from dermalens.evaluation.metrics import classification_metrics
from dermalens.runtime.calibration import Calibration

KEYS = ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "nll")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundle folders trained on the same split")
    p.add_argument("--data", default="../shared/data/ham10000")
    p.add_argument("--split-file", required=True)
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--tta", action="store_true")
    args = p.parse_args(argv)
    bundles = [load_bundle(m) for m in args.models]
    classes = bundles[0].classes
    if any(b.classes != classes for b in bundles):
        sys.exit("the bundles name different classes; they cannot be averaged")
    probs, scores, rows = [], [], []
    for bundle in bundles:
        result = evaluate(bundle.path, args.data, args.split, args.split_file, tta=args.tta)
        table = result.predictions
        if rows and not np.array_equal(table["image_id"], rows[0][1]["image_id"]):
            sys.exit("the bundles were evaluated on different images")
        p_ = table[[f"p_{c}" for c in classes]].to_numpy(np.float64)
        probs.append(p_)
        scores.append(Calibration.of(bundle).scores(p_))
        rows.append((bundle.version, table, result.metrics))
    labels = rows[0][1]["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    mean_p = np.mean(probs, axis=0)
    answers = np.mean(scores, axis=0).argmax(axis=1)
    ensemble = classification_metrics(labels, mean_p, classes, answers)
    report = {version: {k: m[k] for k in KEYS} for version, _, m in rows}
    report["ensemble"] = {k: ensemble[k] for k in KEYS}
    report["ensemble"]["recall"] = {c: v["recall"] for c, v in ensemble["per_class"].items()}
    print("| model | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for name, m in report.items():
        cells = [f"{m[k]:.4f}" if isinstance(m[k], float) else str(m[k]) for k in KEYS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps(report["ensemble"]["recall"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
