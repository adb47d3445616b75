"""Would one temperature on an ensemble's averaged probabilities fix its calibration?

    python benchmarks/ensemble_sharpen.py VAL_DIR TEST_DIR [VAL_DIR TEST_DIR ...]

Each pair is two `dermalens evaluate` report folders of the same ensemble bundle: its val
part and its test part. A temperature T is fitted on val by NLL for p ** (1 / T),
renormalised; then ECE and NLL before and after are printed for val and test.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from dermalens.evaluation.metrics import expected_calibration_error


def load(folder: str) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(f"{folder}/predictions.csv")
    classes = [c[2:] for c in table.columns if c.startswith("p_") and c != "p_malignant"]
    probs = table[[f"p_{c}" for c in classes]].to_numpy(np.float64)
    labels = table["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return probs, labels


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def ece(probs: np.ndarray, labels: np.ndarray) -> float:
    return expected_calibration_error(labels, probs)[0]


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    fit = minimize_scalar(
        lambda t: nll(sharpen(probs, t), labels), bounds=(0.3, 3.0), method="bounded"
    )
    return float(fit.x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "folders", nargs="+", metavar="VAL_DIR TEST_DIR", help="pairs of evaluate report folders"
    )
    folders = p.parse_args(argv).folders
    if len(folders) % 2:
        p.error("give the report folders in pairs: VAL_DIR TEST_DIR [VAL_DIR TEST_DIR ...]")
    print("| val report | T | val ECE | val NLL | test ECE | test NLL |")
    print("|---|---|---|---|---|---|")
    for val, test in zip(folders[::2], folders[1::2]):
        pv, yv = load(val)
        pt, yt = load(test)
        t = fit_temperature(pv, yv)
        cells = [
            f"{f(p, y):.3f} → {f(sharpen(p, t), y):.3f}"
            for p, y in ((pv, yv), (pt, yt))
            for f in (ece, nll)
        ]
        print(f"| {val} | {t:.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
