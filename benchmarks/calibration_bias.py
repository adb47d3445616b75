"""Temperature alone against temperature + per-class bias ("vector scaling" with one shared
scale), both fitted on validation NLL, measured on test.

    python benchmarks/calibration_bias.py src/dermalens/bundled/default ../shared/data/ham10000 \
        --split-file benchmarks/splits/ham10000-seed0.csv

A class-weighted model is tilted towards rare classes on purpose (balanced accuracy);
temperature scaling cannot undo a tilt, a per-class bias can. This script measures the
trade: calibration (ECE, NLL) against balanced accuracy, and the way out that `calibrate`
takes: calibrated probabilities, answers from the model's own (class-weighted) ranking.
It changes no bundle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.metrics import balanced_accuracy_score

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluation.calibrate import fit_temperature, fit_temperature_and_bias
from dermalens.evaluation.evaluate import run_table
from dermalens.evaluation.metrics import classification_metrics
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.predictor import Predictor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--split-file", required=True, type=Path)
    args = p.parse_args(argv)
    bundle = load_bundle(args.model)
    predictor = Predictor(bundle, ood=False)
    table = load_split(load_dataset(args.data), args.split_file)
    index = {c: i for i, c in enumerate(bundle.classes)}
    parts = {}
    for split in ("val", "test"):
        part = table[table["split"] == split].reset_index(drop=True)
        run = run_table(predictor, part, progress=False, tta=False)
        parts[split] = (run.logits[0][run.ok], part["label"].map(index).to_numpy()[run.ok])
    (val_z, val_y), (test_z, test_y) = parts["val"], parts["test"]
    t_only = fit_temperature(val_z, val_y)
    temperature, bias = fit_temperature_and_bias(val_z, val_y)
    biased = softmax(test_z / temperature + bias, axis=1)
    # the alternative not adopted: answers argmax(log p - alpha log prior), alpha on val
    train = table[table["split"] == "train"]["label"].map(index).to_numpy()
    log_prior = np.log(np.bincount(train, minlength=len(bundle.classes)) / len(train))
    val_p = softmax(val_z / temperature + bias, axis=1)
    alpha = max(
        np.arange(0, 1.51, 0.05),
        key=lambda a: balanced_accuracy_score(
            val_y, Calibration(temperature, bias, -a * log_prior).decide(val_p)
        ),
    )
    rows = {
        f"temperature {t_only:.3f}": (softmax(test_z / t_only, axis=1), None),
        f"temperature {temperature:.3f} + bias {np.round(bias, 2).tolist()}, argmax": (
            biased,
            None,
        ),
        "same probabilities, answers argmax(log p - bias) (what `calibrate` stores)": (
            biased,
            Calibration(temperature, bias, -bias).decide(biased),
        ),
        f"same probabilities, answers argmax(log p - {alpha:.2f} log train prior), alpha "
        "chosen on val (not adopted)": (
            biased,
            Calibration(temperature, bias, -alpha * log_prior).decide(biased),
        ),
    }
    print(f"test part, {len(test_y)} images; all fitted on {len(val_y)} validation images")
    for name, (probs, answers) in rows.items():
        m = classification_metrics(test_y, probs, bundle.classes, answers)
        print(
            f"acc {m['accuracy']:.3f}  bal acc {m['balanced_accuracy']:.3f}  "
            f"macro AUC {m['macro_auc']:.3f}  ECE {m['ece']:.3f}  NLL {m['nll']:.3f}  {name}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
