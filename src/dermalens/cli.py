"""`dermalens` command line: a thin shim over the library.

dermalens predict IMAGE_OR_FOLDER...       # bundled default model
dermalens train [config.json] key=value ...
dermalens evaluate MODEL DATA [--split test --split-file runs/x/split.csv]
dermalens export MODEL [--check-images DIR]
dermalens calibrate MODEL DATA --split-file runs/x/split.csv
dermalens ensemble MODEL MODEL... --out DIR [--data DATA --split-file runs/x/split.csv]
dermalens data check DATA
dermalens serve [--model M --host H --port P]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from dermalens.bundle import default_model_path

EPILOG = "Decision support only, never a diagnosis."


def _predict(args: argparse.Namespace) -> int:
    from dermalens.batch import predict_folder
    from dermalens.predict import DISCLAIMER, NOT_SKIN_ADVICE, Predictor, iter_images

    predictor = Predictor(
        args.model or default_model_path(), backend=args.backend, precision=args.precision
    )
    rows, failed = [], 0
    paths = iter_images(args.paths)
    progress = sys.stderr.isatty() and len(paths) > 32
    for item in predict_folder(predictor, paths, top_k=args.top_k, progress=progress):
        if item.error:
            print(f"error: {item.error}", file=sys.stderr)
            failed += 1
        else:
            rows.append(item.prediction)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "top1", "p_top1", "triage", "p_malignant", "uncertain"])
        for r in rows:
            writer.writerow(
                [
                    r.source,
                    r.label,
                    f"{r.top[0].probability:.4f}",
                    r.triage,
                    f"{r.malignant_probability:.4f}",
                    r.uncertain,
                ]
            )
    else:
        print(f"model: {predictor.bundle.version}")
        for r in rows:
            tops = "  ".join(f"{c.code} {c.probability:6.1%}" for c in r.top)
            print(
                f"{r.source}\n  {tops}\n  triage: {r.triage} "
                f"(P(malignant) = {r.malignant_probability:.1%})"
            )
            if r.not_skin:
                print(f"  not a dermoscopic skin image: {r.not_skin_reason}; {NOT_SKIN_ADVICE}")
        print(f"\n{DISCLAIMER}")
    return 1 if failed and not rows else 0


def _train(args: argparse.Namespace) -> int:
    from dermalens.config import make_config
    from dermalens.train import train

    file = None
    overrides = list(args.settings)
    if overrides and "=" not in overrides[0]:
        file = overrides.pop(0)
    cfg = make_config(file, overrides)
    bundle = train(cfg)
    print(f"bundle: {bundle.path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dermalens.evaluate import evaluate
    from dermalens.metrics import summary

    out = args.out or Path("runs") / "eval" / Path(args.data).name
    result = evaluate(
        args.model,
        args.data,
        args.split,
        args.split_file,
        out,
        args.backend,
        progress=not args.quiet,
        use_metadata=not args.no_metadata,
        keep_duplicates=args.keep_duplicates,
        withhold=args.withhold,
    )
    print(summary(result.metrics))
    for name, row in result.metrics["per_class"].items():
        auc = f"{row['auc']:.3f}" if row["auc"] is not None else "  -  "
        print(
            f"  {name:>8}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
            f"f1 {row['f1']:.3f}  auc {auc}  n={row['support']}"
        )
    print(f"report: {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dermalens.export import export_onnx
    from dermalens.predict import iter_images

    images = iter_images(args.check_images)[:64] if args.check_images else None
    check = export_onnx(args.model, images, half_weights=args.half_weights)
    print(f"ONNX written to {Path(args.model) / 'model.onnx'}")
    print(
        f"check on {check['images']}: max |dp| = {check['max_abs_prob_diff']:.2e}, "
        f"top-1 agreement = {check['top1_agreement']:.3f}"
    )
    return 0


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _fields(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated metadata field names (age, sex, site)."""
    from dermalens.metadata import withheld_fields

    try:
        return withheld_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _calibrate(args: argparse.Namespace) -> int:
    from dermalens.calibrate import Targets, calibrate_bundle
    from dermalens.metrics import summary as summary_line

    cap = args.ood_max_val_reject
    ood_cap = {} if cap is None else {"ood_max_val_reject": cap}
    summary = calibrate_bundle(
        args.model,
        args.data,
        args.split_file,
        args.split,
        args.out,
        targets=Targets(class_bias=not args.temperature_only, **ood_cap),
        record_test=args.record_test,
    )
    test = summary.pop("test", None)
    print(json.dumps(summary, indent=2))
    if test is not None:
        print(f"test: {summary_line(test)}")
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from dermalens.calibrate import calibrate_bundle
    from dermalens.ensemble import build_ensemble
    from dermalens.metrics import summary as summary_line

    if bool(args.data) != bool(args.split_file):
        print("dermalens ensemble: error: give --data and --split-file together", file=sys.stderr)
        return 2
    bundle = build_ensemble(args.models, args.out, args.name or "", args.allow_other_splits)
    print(f"ensemble of {len(bundle.info['members'])} members written to {bundle.path}")
    if not args.data:
        print(f"not calibrated yet: dermalens calibrate {bundle.path} DATA --split-file SPLIT")
        return 0
    reports = args.reports or args.out.with_name(f"{args.out.name}-calibration")
    summary = calibrate_bundle(
        bundle.path, args.data, args.split_file, out_dir=reports, record_test=True
    )
    test = summary.pop("test", None)
    print(json.dumps(summary, indent=2))
    if test is not None:
        print(f"test: {summary_line(test)}")
    return 0


def _soup(args: argparse.Namespace) -> int:
    from dermalens.metrics import summary as summary_line
    from dermalens.soup import build_soup

    bundle = build_soup(
        args.run,
        args.out,
        epochs=args.epochs,
        greedy=args.greedy,
        data=args.data,
        split_file=args.split_file,
        calibrate=not args.no_calibrate,
    )
    print(f"average of epochs {bundle.info['soup']['epochs']} written to {bundle.path}")
    for step in bundle.info["soup"].get("greedy_steps", []):
        kept = "kept" if step["kept"] else "dropped"
        print(f"  val bal acc {step['val_balanced_accuracy']:.4f}  {step['epochs']}  {kept}")
    if "test" in bundle.metrics:
        print(f"test: {summary_line(bundle.metrics['test'])}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from dermalens.data.check import check_main

    return check_main(args.data, args.json)


def _serve(args: argparse.Namespace) -> int:
    from dermalens.serve import run

    run(model=args.model, host=args.host, port=args.port)
    return 0


def _info(args: argparse.Namespace) -> int:
    from dermalens.bundle import load_bundle

    description = load_bundle(args.model or default_model_path()).description()
    description.pop("history", None)
    print(json.dumps(description, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dermalens",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("predict", help="classify images or folders")
    s.add_argument("paths", nargs="+")
    s.add_argument("--model", help="bundle folder (default: the bundled model)")
    s.add_argument("--top-k", type=int, default=3)
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    s.add_argument(
        "--precision",
        choices=("auto", "fp32", "int8", "bf16"),
        default="auto",
        help="auto (default): the fastest variant whose recorded agreement passed",
    )
    s.set_defaults(func=_predict)

    s = sub.add_parser("train", help="train a model: [config.json|yaml] key=value ...")
    s.add_argument("settings", nargs="*")
    s.set_defaults(func=_train)

    s = sub.add_parser("evaluate", help="metrics, plots and predictions of a bundle on data")
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    s.add_argument("--split-file", help="split CSV of a run (needed unless --split all)")
    s.add_argument("--out", type=Path, help="report folder (default runs/eval/<data name>)")
    s.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    s.add_argument("--quiet", action="store_true")
    hide = s.add_mutually_exclusive_group()
    hide.add_argument(
        "--no-metadata",
        action="store_true",
        help="feed age, sex and site as missing (models trained with metadata)",
    )
    hide.add_argument(
        "--withhold",
        type=_fields,
        default=(),
        metavar="FIELDS",
        help="feed only these fields as missing, e.g. age or sex,site",
    )
    s.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="count byte-identical images every time (default: once, as training does)",
    )
    s.set_defaults(func=_evaluate)

    s = sub.add_parser("export", help="write model.onnx into a bundle and check it")
    s.add_argument("model")
    s.add_argument("--check-images", nargs="*", help="images or folders to compare on")
    s.add_argument("--half-weights", action="store_true", help="store model.pt in float16")
    s.add_argument(
        "--precision",
        nargs="+",
        choices=("fp32", "int8", "bf16"),
        default=[],
        help="also build these variants, kept only if they agree with fp32",
    )
    s.add_argument("--data", help="dataset of the run (variants: calibration and check)")
    s.add_argument("--split-file", help="the run's split CSV (variants)")
    s.set_defaults(func=_export)

    s = sub.add_parser("calibrate", help="temperature, abstention, triage and OOD on val")
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--split-file", required=True)
    s.add_argument("--split", default="val")
    s.add_argument("--out", type=Path)
    s.add_argument(
        "--temperature-only",
        action="store_true",
        help="no per-class bias: probabilities keep the model's class-weighted tilt",
    )
    s.add_argument(
        "--ood-max-val-reject",
        type=_fraction,
        metavar="F",
        help="the OOD check may call at most this share of validation skin images 'not skin' "
        "(default 0.02)",
    )
    s.add_argument(
        "--record-test",
        action="store_true",
        help="then evaluate the split's test part, store it in the bundle (as training does) "
        "and write the reports under --out",
    )
    s.set_defaults(func=_calibrate)

    s = sub.add_parser("ensemble", help="combine bundles trained on the same split into one")
    s.add_argument("models", nargs="+", help="member bundle folders (the first gives heatmaps)")
    s.add_argument("--out", type=Path, required=True, help="the new ensemble bundle folder")
    s.add_argument("--name", help="default: the members' names joined by '+'")
    s.add_argument("--data", help="dataset: calibrate on the split's val part, record test")
    s.add_argument("--split-file", help="the members' split CSV (with --data)")
    s.add_argument("--reports", type=Path, help="calibration reports (default OUT-calibration)")
    s.add_argument(
        "--allow-other-splits",
        action="store_true",
        help="skip the same-split check: only for members whose split file cannot be found "
        "here, or for evaluation on data that no member trained on",
    )
    s.set_defaults(func=_ensemble)

    s = sub.add_parser("soup", help="average a run's epoch snapshots into one bundle")
    s.add_argument("run", type=Path, help="a run folder trained with snapshots=True")
    s.add_argument("--out", type=Path, required=True, help="the new bundle folder")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--epochs", type=int, nargs="+", help="average these epochs (1-based)")
    how.add_argument(
        "--greedy", action="store_true", help="add snapshots while val balanced accuracy holds"
    )
    s.add_argument("--data", help="dataset folder (default: the run's)")
    s.add_argument("--split-file", help="split CSV (default: the run's split.csv)")
    s.add_argument(
        "--no-calibrate", action="store_true", help="skip calibration and the test record"
    )
    s.set_defaults(func=_soup)

    s = sub.add_parser("data", help="dataset tools")
    data_sub = s.add_subparsers(dest="data_command", required=True)
    c = data_sub.add_parser("check", help="counts, unreadable images, duplicates, orphans")
    c.add_argument("data")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)

    s = sub.add_parser("serve", help="start the web page and REST API")
    s.add_argument("--model")
    s.add_argument("--host", help="default $DERMALENS_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default $DERMALENS_PORT or 8000")
    s.set_defaults(func=_serve)

    s = sub.add_parser("info", help="print a bundle's description")
    s.add_argument("model", nargs="?")
    s.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from dermalens.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"dermalens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; earlier runs and bundles are untouched", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
