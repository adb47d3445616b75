"""Does enlarging an image from a smaller source move the default model's answers?

    python benchmarks/enlarged_val.py [--model M] [--shares 1.0 0.9 0.8]

The val part of split seed 0 (no test or external image): each image shrunk to a share of
its size, then enlarged back to the model's input by `Predictor.prepare`. Images only (no
metadata), no gate. Prints the balanced accuracy and the triage sensitivity / specificity
at the bundle's own threshold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.runtime.predictor import Predictor

sys.path.insert(0, str(Path(__file__).parent))
from shift_select import enlarged  # noqa: E402  (benchmarks share helpers)
from shift_warning import decode  # noqa: E402


def probabilities(predictor: Predictor, paths, share: float, size: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(paths), size):
        images = decode(paths[start : start + size])
        if share != 1.0:
            images = [enlarged(image, share) for image in images]
        batch = np.stack([predictor.prepare(image) for image in images])
        out.append(predictor.probabilities(batch, tta=False))
    return np.concatenate(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="src/dermalens/bundled/default")
    p.add_argument("--data", default="../shared/data/ham10000")
    p.add_argument("--split-file", type=Path, default=Path("benchmarks/splits/ham10000-seed0.csv"))
    p.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.9, 0.8])
    args = p.parse_args(argv)
    predictor = Predictor(args.model, threads=1)
    table = drop_duplicate_extras(load_split(load_dataset(args.data), args.split_file))
    val = table[table["split"] == "val"].reset_index(drop=True)
    codes = list(predictor.bundle.classes)
    y = val["label"].map({c: i for i, c in enumerate(codes)}).to_numpy()
    for share in args.shares:
        probs = probabilities(predictor, list(val["path"]), share)
        pred = probs.argmax(1)
        bal = balanced_accuracy_score(y, pred)
        p_mal = probs[:, predictor.malignant_mask].sum(1)
        is_mal = predictor.malignant_mask[y]
        sens = np.mean(p_mal[is_mal] >= predictor.triage_at)
        spec = np.mean(p_mal[~is_mal] < predictor.triage_at)
        print(
            f"source {share:.2f}: balanced accuracy {bal:.3f}  sensitivity {sens:.3f}  "
            f"specificity {spec:.3f}  ({len(y)} images)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
