"""Which int8 configuration holds agreement with fp32? Agreement only, no timing.

    python benchmarks/int8_scan.py runs/x/bundle ../shared/data/ham10000 \
        --split-file runs/x/split.csv --calib 512 \
        --configs percentile-qdq entropy-qdq minmax-qdq percentile-qdq-stage0 ...

A config is `<calibration>-<format>[-<group>...]`: calibration entropy / percentile /
minmax, format qdq / qoperator, and extra node groups kept in float besides the stem,
squeeze-excite and head (`last`, `depthwise`, `stage<N>` for timm's `blocks.N`). One
calibration pass per method (on training-split images) serves every config using it;
agreement is measured on the held-out split against ONNX Runtime fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from lowprec import Int8Config, calibrate, prepare_for_int8, quantize_int8

from dermalens.bundle import ONNX, load_bundle
from dermalens.export.variants import agreement, batches
from dermalens.runtime.engines import OnnxEngine
from dermalens.runtime.selection import MAX_PROB_DIFF, TOP1_MIN

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import load_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "ham10000"))
    p.add_argument("--split-file", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--calib", type=int, default=512)
    p.add_argument("--configs", nargs="+", default=["percentile-qdq"])
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    p.add_argument("--save", type=Path, help="keep each quantised model in this folder")
    args = p.parse_args(argv)
    bundle = load_bundle(args.model)
    table = load_split(load_dataset(args.data), args.split_file or bundle.path.parent / "split.csv")
    held = list(table[table["split"] == args.split]["path"])
    train = table[table["split"] == "train"]["path"]
    calib = list(train.sample(min(args.calib, len(train)), random_state=0))
    pre = bundle.preprocessing
    reference = OnnxEngine(bundle)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dermalens-scan-") as tmp:
        tmp = Path(tmp)
        prepared = prepare_for_int8(bundle.file(ONNX), tmp / "prep.onnx", pre.height, pre.width)
        for name in args.configs:
            config = Int8Config.from_name(name)
            cache = tmp / f"ranges-{config.calibration}.json"
            if not cache.exists():
                start = time.perf_counter()
                calibrate(prepared, batches(calib, bundle), config, cache)
                print(f"calibrated {config.calibration}: {time.perf_counter() - start:.0f} s")
            quantize_int8(prepared, tmp / f"{name}.onnx", cache, config, pre.height, pre.width)
            engine = OnnxEngine(bundle, path=str(tmp / f"{name}.onnx"))
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp / f"{name}.onnx", args.save / f"int8-{name}.onnx")
            result = agreement(bundle, reference, engine, held)
            rows.append(
                {
                    "config": name,
                    "top1_agreement": result.top1_agreement,
                    "max_abs_prob_diff": result.max_abs_prob_diff,
                    "meets": result.meets(),
                    "images": result.images,
                    "calibration_images": len(calib),
                }
            )
            print(
                f"{name:40s} top-1 {result.top1_agreement:.4f}  "
                f"max |dp| {result.max_abs_prob_diff:.4f}  "
                f"{'meets' if result.meets() else 'fails'} {TOP1_MIN} / {MAX_PROB_DIFF}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
