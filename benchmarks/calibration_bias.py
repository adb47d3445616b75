"""Temperature alone against temperature + per-class bias ("vector scaling" with one shared
scale), both fitted on validation NLL, measured on test.

    python benchmarks/calibration_bias.py src/dermalens/bundled/default ../shared/data/ham10000 \
        --split-file benchmarks/splits/ham10000-seed0.csv

A class-weighted model is tilted towards rare classes on purpose (balanced accuracy);
temperature scaling cannot undo a tilt, a per-class bias can. This script measures the
trade: calibration (ECE, NLL) against balanced accuracy. It changes no bundle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluate import run_table
from dermalens.metrics import classification_metrics
from dermalens.predict import Predictor


def fit_temperature_and_bias(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimise NLL of softmax(logits / T + b) over T and b (b[0] = 0: softmax is shift-free)."""

    def nll(params: np.ndarray) -> float:
        bias = np.r_[0.0, params[1:]]
        log_p = log_softmax(logits / params[0] + bias, axis=1)
        return float(-log_p[np.arange(len(labels)), labels].mean())

    start = np.r_[1.0, np.zeros(logits.shape[1] - 1)]
    bounds = [(0.05, 10.0)] + [(-10.0, 10.0)] * (logits.shape[1] - 1)
    result = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    return float(result.x[0]), np.r_[0.0, result.x[1:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--split-file", required=True, type=Path)
    args = p.parse_args()
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
    temperature, bias = fit_temperature_and_bias(val_z, val_y)
    rows = {
        f"temperature {bundle.temperature:.3f} (the bundle's)": softmax(
            test_z / bundle.temperature, axis=1
        ),
        f"temperature {temperature:.3f} + bias {np.round(bias, 2).tolist()}": softmax(
            test_z / temperature + bias, axis=1
        ),
    }
    print(f"test part, {len(test_y)} images; both fitted on {len(val_y)} validation images")
    for name, probs in rows.items():
        m = classification_metrics(test_y, probs, bundle.classes)
        print(
            f"acc {m['accuracy']:.3f}  bal acc {m['balanced_accuracy']:.3f}  "
            f"macro AUC {m['macro_auc']:.3f}  ECE {m['ece']:.3f}  NLL {m['nll']:.3f}  {name}"
        )


if __name__ == "__main__":
    main()
