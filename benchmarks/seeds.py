"""Mean and spread of test metrics over runs of one recipe on different split seeds.

    python benchmarks/seeds.py runs/ham-lite0-meta-ema/bundle runs/ham-lite0-meta-ema-s1/bundle \
        runs/ham-lite0-meta-ema-s2/bundle

Reads each bundle's own test numbers (`metrics.test`, written at the end of its training run
on the test part of its own lesion-grouped split) and prints one row per run, then the mean
and the sample standard deviation.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dermalens.bundle import load_bundle

KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundle folders, one run per split seed")
    paths = p.parse_args(argv).models
    rows = []
    print("| run | split seed | best epoch | test images | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 4) + "|")
    for path in paths:
        bundle = load_bundle(path)
        test = bundle.metrics["test"]
        history = bundle.info.get("history") or []
        best = max(history, key=lambda r: r["val_balanced_accuracy"], default={"epoch": "-"})
        rows.append([test[k] for k in KEYS])
        cells = " | ".join(f"{test[k]:.3f}" for k in KEYS)
        print(
            f"| {bundle.name} | {bundle.train_config.get('split_seed')} | {best['epoch']} "
            f"of {len(history)} | {test['n']} | {cells} |"
        )
    values = np.array(rows)
    spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(KEYS))
    cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(values.mean(axis=0), spread))
    print(f"| mean ± sd over {len(values)} | | | | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
