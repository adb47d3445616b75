"""Does enlarging an image from a smaller source move the default model's answers?

    python benchmarks/enlarged_val.py [--model M] [--shares 1.0 0.9 0.8]

The val part of split seed 0 (no test or external image): each image shrunk to a share of
its size, then enlarged back to the model's input by `Predictor.prepare`. Images only (no
metadata), no gate. Prints the balanced accuracy and the triage sensitivity / specificity
at the bundle's own threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.runtime.predictor import Predictor
from dermalens.taxonomy import is_malignant


def probabilities(predictor: Predictor, paths, share: float, size: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(paths), size):
        batch = []
        for path in paths[start : start + size]:
            image = Image.open(path).convert("RGB")
            if share != 1.0:
                small = (round(image.width * share), round(image.height * share))
                image = image.resize(small, Image.BILINEAR)
            batch.append(predictor.prepare(image))
        out.append(predictor.probabilities(np.stack(batch), tta=False))
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
    malignant = np.array([bool(is_malignant(c)) for c in codes])
    y = val["label"].map({c: i for i, c in enumerate(codes)}).to_numpy()
    for share in args.shares:
        probs = probabilities(predictor, list(val["path"]), share)
        pred = probs.argmax(1)
        bal = np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)])
        p_mal, is_mal = probs[:, malignant].sum(1), malignant[y]
        sens = np.mean(p_mal[is_mal] >= predictor.triage_at)
        spec = np.mean(p_mal[~is_mal] < predictor.triage_at)
        print(
            f"source {share:.2f}: balanced accuracy {bal:.3f}  sensitivity {sens:.3f}  "
            f"specificity {spec:.3f}  ({len(y)} images)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
