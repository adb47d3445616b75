"""How often the shift warning (`runtime.shift`) fires: clean, corrupted and external images.

    python benchmarks/shift_warning.py src/dermalens/bundled/default ../shared/data/ham10000 \
        --split-file benchmarks/splits/ham10000-seed0.csv \
        --external ../shared/data/isic2019-sample --out benchmarks/results

The warning is fitted on the split's val part (`evaluation.shift_fit.fit_shift`, at most
--target of validation images flagged), then measured on: the clean test part; --limit test
images (evenly spaced, every class kept) corrupted by every corruption at each of
--severities (`evaluation.corruptions`, seeded per image); each --external data set (all its
images). Also the batch warning on random batches of --batch images of each set.
Writes shift-NAME.json; prints a table.
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
from dermalens.evaluation import corruptions as C
from dermalens.evaluation.shift_fit import TARGET, fit_shift
from dermalens.files import atomic_write_text, now
from dermalens.imageio import ImageError, load_image
from dermalens.runtime.ood import pixel_stats, pooled
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.shift import STATS, acquisition_stats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--split-file", required=True)
    p.add_argument("--external", nargs="*", default=[], help="external data sets (any layout)")
    p.add_argument("--severities", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--limit", type=int, default=200, help="test images to corrupt")
    p.add_argument("--target", type=float, default=TARGET)
    p.add_argument("--batch", type=int, default=50, help="images per batch for batch warnings")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/shift"))
    return p.parse_args(argv)


def measure(predictor: Predictor, images: list, size: int = 64) -> np.ndarray:
    """Acquisition statistics (with the OOD check's scores) of PIL images, in batches."""
    stats = []
    for start in range(0, len(images), size):
        batch = np.stack([predictor.prepare(im) for im in images[start : start + size]])
        _, fmap = predictor.forward(batch, tta=False)
        features = colours = None
        if predictor.ood is not None:
            features = predictor.ood.score(pooled(fmap))
            colours = predictor.ood.colour_score(pixel_stats(batch, predictor.pre))
        stats.append(acquisition_stats(batch, predictor.pre, features, colours))
    return np.concatenate(stats)


def decode(paths) -> list:
    out = []
    for p in paths:
        try:
            out.append(load_image(p))
        except ImageError:
            continue
    return out


def batch_rates(monitor, flags: np.ndarray, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(flags))
    batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
    shifted = [monitor.batch_warning(flags[b])["shifted"] for b in batches]
    return {"batches": len(batches), "batch_size": size, "shifted_share": float(np.mean(shifted))}


def report(name: str, monitor, stats, batch: int) -> dict:
    flags, reasons = monitor.check(stats)
    by_stat = {s: 0 for s in STATS}
    for r in reasons:
        for part in filter(None, r.split(", ")):
            by_stat[part.rsplit(" ", 1)[0]] += 1
    return {
        "set": name,
        "images": int(len(flags)),
        "flagged_share": float(flags.mean()) if len(flags) else None,
        "by_statistic": {k: v for k, v in by_stat.items() if v},
        **batch_rates(monitor, flags, batch),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    predictor = Predictor(args.model, threads=args.threads)
    table = drop_duplicate_extras(load_split(load_dataset(args.data), Path(args.split_file)))
    val, test = table[table["split"] == "val"], table[table["split"] == "test"]
    val_measured = measure(predictor, decode(val["path"]))
    monitor = fit_shift(val_measured, target=args.target)
    rows = [report("val (fit)", monitor, val_measured, args.batch)]
    rows.append(report("test clean", monitor, measure(predictor, decode(test["path"])), args.batch))
    chosen = test.sort_values(["label", "image_id"])
    step = max(1, len(chosen) // max(1, args.limit))
    chosen = chosen.iloc[::step][: args.limit]
    clean = decode(chosen["path"])
    seeds = [C.image_seed(i) for i in chosen["image_id"]]
    pooled_flags = []
    for name in C.CORRUPTIONS:
        for severity in args.severities:
            shifted = [C.apply(im, name, severity, seed=s) for im, s in zip(clean, seeds)]
            row = report(f"{name} s{severity}", monitor, measure(predictor, shifted), args.batch)
            rows.append(row)
            pooled_flags.append(row["flagged_share"])
    for ext in args.external:
        images = decode(load_dataset(ext).table["path"])
        rows.append(report(f"external {Path(ext).name}", monitor, measure(predictor, images), 26))
    result = {
        "command": shlex.join(["python", "benchmarks/shift_warning.py", *sys.argv[1:]]),
        "model": predictor.bundle.version,
        "fitted": monitor.to_dict(),
        "corrupted_mean_flagged_share": float(np.mean(pooled_flags)),
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "at": now(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"shift-{Path(args.model).name}.json"
    atomic_write_text(path, json.dumps(result, indent=2))
    for row in rows:
        print(
            f"{row['set']:>24}  n={row['images']:5d}  flagged {row['flagged_share']:.3f}  "
            f"batches shifted {row['shifted_share']:.2f}  {row['by_statistic']}"
        )
    print(
        f"corrupted (severities {args.severities}) mean flagged share: "
        f"{result['corrupted_mean_flagged_share']:.3f}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
