"""Accuracy benchmark of a model bundle on any dataset folder, as one table.

    python benchmarks/accuracy.py runs/x/bundle ../shared/data/ham10000 \
        --split-file runs/x/split.csv --split test [--tta] [--no-metadata | --withhold FIELDS]

Prints accuracy, balanced accuracy, macro F1, macro AUC, ECE, NLL and per-class recall;
then, at the bundle's own thresholds, triage sensitivity / specificity, abstention
coverage / selective accuracy, and how many of these skin images the OOD check rejects.
All numbers come from `dermalens.evaluation.evaluate.evaluate`, the same code as
`dermalens evaluate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dermalens.evaluation.evaluate import evaluate


def fmt(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def rows(metrics: dict, thresholds: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [
        (key, metrics.get(key))
        for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece", "nll")
    ]
    for code, per in metrics["per_class"].items():
        out.append(
            (f"recall {code} (n={per['support']})", per["recall"] if per["support"] else None)
        )
    decision = metrics.get("decision") or {}
    triage, abstain = decision.get("triage", {}), decision.get("abstention", {})
    source = "bundle" if "triage_malignant" in thresholds else "default"
    out += [
        (f"triage threshold ({source})", triage.get("threshold")),
        ("triage sensitivity", triage.get("sensitivity")),
        ("triage specificity", triage.get("specificity")),
        ("malignant flagged or deferred", triage.get("malignant_flagged_or_deferred")),
    ]
    source = "bundle" if "uncertain_below" in thresholds else "default"
    out += [
        (f"uncertain below ({source})", abstain.get("uncertain_below")),
        ("coverage (answered)", abstain.get("coverage")),
        ("selective accuracy", abstain.get("selective_accuracy")),
    ]
    ood = metrics.get("ood")
    out.append(("OOD reject rate (skin images)", ood["rejected"] if ood else "no OOD check"))
    if ood:
        worst = max(ood["per_class"].items(), key=lambda kv: kv[1])
        out.append((f"OOD reject rate, worst class ({worst[0]})", worst[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="bundle folder")
    p.add_argument("data", help="dataset folder (HAM10000, ISIC 2019 or class folders)")
    p.add_argument("--split-file", help="a run's split.csv (needed unless --split all)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    p.add_argument("--tta", action="store_true", help="average flips and a 180-degree turn")
    hide = p.add_mutually_exclusive_group()
    hide.add_argument(
        "--no-metadata",
        action="store_true",
        help="feed age, sex and site as missing (for a model trained with metadata)",
    )
    hide.add_argument(
        "--withhold",
        default="",
        metavar="FIELDS",
        help="feed only these fields as missing, e.g. age or sex,site",
    )
    p.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    p.add_argument("--out", type=Path, help="also write the full evaluation report here")
    args = p.parse_args(argv)
    from dermalens.patient import withheld_fields

    try:
        withhold = withheld_fields([f for f in args.withhold.split(",") if f])
    except ValueError as exc:
        p.error(str(exc))
    result = evaluate(
        args.model,
        args.data,
        args.split,
        args.split_file,
        args.out,
        args.backend,
        progress=sys.stderr.isatty(),
        tta=args.tta,
        use_metadata=not args.no_metadata,
        withhold=withhold,
    )
    from dermalens.bundle import load_bundle

    thresholds = load_bundle(args.model).thresholds
    table = rows(result.metrics, thresholds)
    width = max(len(name) for name, _ in table)
    print(
        f"model {result.metrics['model']}  data {args.data}  split {args.split}  "
        f"tta {args.tta}  metadata {result.metrics['metadata']}  "
        f"withheld {','.join(result.metrics['withheld']) or '-'}"
    )
    for name, value in table:
        print(f"{name:<{width}}  {fmt(value)}")
    if result.metrics["unreadable"]:
        print(f"unreadable images skipped: {len(result.metrics['unreadable'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
