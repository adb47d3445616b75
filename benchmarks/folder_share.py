"""Folder prediction against the model's own batch throughput, alternating, in rounds.

    python benchmarks/folder_share.py src/dermalens/bundled/default \
        --split-file benchmarks/splits/ham10000-seed0.csv --rounds 4

Each round times ONNX Runtime alone on one preprocessed batch of 32 (repeated for
`--seconds`), then `dermalens.runtime.folder.predict_folder` over the held-out JPEGs from
disk (decoding, preprocessing, the OOD check and the answers included), with the engine's
threads spinning and sleeping. Issue 5 asks for the folder rate to be >= 90 % of the
batch rate. Run it on an idle machine: both measures use every core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.preprocess import to_input
from dermalens.runtime.engines import OnnxEngine
from dermalens.runtime.folder import predict_folder
from dermalens.runtime.predictor import Predictor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data", nargs="?", default="../shared/data/ham10000")
    p.add_argument("--split-file", required=True)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    bundle = load_bundle(args.model)
    table = load_split(load_dataset(args.data), Path(args.split_file))
    files = [Path(f) for f in table[table["split"] == "test"]["path"]]
    predictor = Predictor(bundle, backend="onnx")
    batch = np.stack([to_input(f, predictor.pre) for f in files[:32]])
    print(f"{len(files)} held-out images")
    print("| round | engine threads | batch-32 images/s | folder images/s | share |")
    print("|---|---|---|---|---|")
    shares = []
    for round_ in range(args.rounds):
        for spinning in (True, False):
            predictor.engine = engine = OnnxEngine(bundle, spinning=spinning)
            engine.run(batch)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                engine.run(batch)
                count += len(batch)
            bench = count / (time.perf_counter() - start)
            start = time.perf_counter()
            done = sum(
                1 for item in predict_folder(predictor, files, progress=False) if item.prediction
            )
            folder = done / (time.perf_counter() - start)
            shares.append(folder / bench)
            mode = "spinning" if spinning else "sleeping"
            print(
                f"| {round_} | {mode} | {bench:.0f} | {folder:.0f} | {folder / bench:.0%} |",
                flush=True,
            )
    print(f"share: mean {np.mean(shares):.0%}, range {min(shares):.0%}-{max(shares):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
