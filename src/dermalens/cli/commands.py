"""The subcommands of `dermalens`: each parses nothing, calls one library function and
prints its result. Argument types for the parser live here too."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from dermalens.bundle import default_model_path, load_bundle
from dermalens.cli.predict_table import make_router, number, print_table, shift_line
from dermalens.config import make_config
from dermalens.data.check import check_main
from dermalens.evaluation.calibrate import Targets, calibrate_bundle
from dermalens.evaluation.evaluate import evaluate
from dermalens.evaluation.external import report_lines
from dermalens.evaluation.metrics import summary as summary_line
from dermalens.evaluation.shift_fit import TARGET as SHIFT_TARGET
from dermalens.evaluation.shift_fit import fit_shift_warning
from dermalens.evaluation.subgroups import markdown as subgroup_markdown
from dermalens.export.variants import export_variants
from dermalens.imageio import find_images, iter_images
from dermalens.patient import withheld_fields
from dermalens.runtime.archive import predict_archive
from dermalens.runtime.ensemble import build_ensemble
from dermalens.runtime.folder import folder_summary, predict_folder
from dermalens.runtime.predictor import DISCLAIMER


def run_predict(args: argparse.Namespace) -> int:
    router = make_router(args)
    rows, failed, items = [], 0, []
    # a missing path or a folder without images is reported in its place, not a stop
    paths = [path for path, _ in find_images(args.paths)]
    progress = sys.stderr.isatty() and len(paths) > 32
    for item in predict_folder(router, paths, top_k=args.top_k, progress=progress):
        items.append(item)
        if item.error:
            print(f"error: {item.error}", file=sys.stderr)
            failed += 1
        else:
            rows.append(item.prediction)
    shift = folder_summary(router, items)["shift"]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        header = ["path", "top1", "p_top1", "triage", "p_malignant", "uncertain", "shifted"]
        writer.writerow([*header, "status", "answered_by"])
        for r in rows:
            writer.writerow(
                [
                    r.source,
                    r.label,
                    number(r.top[0].probability if r.top else None, ".4f"),
                    r.triage,
                    number(r.malignant_probability, ".4f"),
                    r.uncertain,
                    "" if r.shift is None else r.shift.flagged,
                    r.status,
                    r.scope.model or "" if r.scope else "",
                ]
            )
    else:
        print_table(router, rows, shift)
    if args.format != "table" and shift is not None and len(rows) > 1:
        print(shift_line(shift), file=sys.stderr)  # stdout stays pure JSON / CSV
    if failed:  # any input that got no answer fails the command, so scripts notice
        total = failed + len(rows)
        print(f"dermalens predict: {failed} of {total} inputs failed", file=sys.stderr)
        return 1
    return 0


def run_predict_batch(args: argparse.Namespace) -> int:
    try:
        summary = predict_archive(
            args.source,
            args.out,
            model=args.model,
            address=args.address,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            batch_size=args.batch_size,
            top_k=args.top_k,
            progress=args.progress,
            gate=not args.no_gate,
        )
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("ray", "pyarrow"):
            raise
        print(
            "dermalens predict-batch: error: needs the scale extra (Ray Data): "
            "pip install -e '.[scale]'",
            file=sys.stderr,
        )
        return 2
    print(f"model: {summary.model_version} (bundle sha256 {summary.bundle_sha256[:16]})")
    print(
        f"{summary.images:,} images: {summary.skipped:,} already done, {summary.written:,} "
        f"predicted in {summary.seconds:.1f} s on {summary.actors} actors"
    )
    print(f"results: {summary.out} ({summary.rows:,} rows, {summary.errors:,} with an error)")
    if summary.gate:
        routes = ", ".join(f"{k}: {v}" for k, v in summary.routes.items()) or "none"
        print(f"scope gate: {summary.gate}; models: {routes}")
    if summary.counts:
        print("this run: " + ", ".join(f"{n:,} {k}" for k, n in summary.counts.items()))
    print(f"\n{DISCLAIMER}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    # loaded here: it needs PyTorch (the train extra); the serving install lacks it
    from dermalens.training.train import train

    file = None
    overrides = list(args.settings)
    if overrides and "=" not in overrides[0]:
        file = overrides.pop(0)
    cfg = make_config(file, overrides)
    bundle = train(cfg)
    print(f"bundle: {bundle.path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
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
    print(summary_line(result.metrics))
    for name, row in result.metrics["per_class"].items():
        auc = f"{row['auc']:.3f}" if row["auc"] is not None else "  -  "
        print(
            f"  {name:>8}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
            f"f1 {row['f1']:.3f}  auc {auc}  n={row['support']}"
        )
    for line in report_lines(result.metrics["external"]):
        print(line)
    if result.metrics.get("subgroups"):
        print("by patient group (95% bootstrap intervals over lesions; small: few images):")
        print(subgroup_markdown(result.metrics["subgroups"]))
    if result.metrics["left_out"]:
        print(f"left out (labels the model does not know): {result.metrics['left_out']}")
    print(f"report: {out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    # loaded here: it needs PyTorch (the train extra); the serving install lacks it
    from dermalens.export.to_onnx import export_onnx

    if args.precision and not (args.data and args.split_file):
        print(
            "dermalens export: error: --precision needs --data and --split-file "
            "(the variant is checked on the split's test images)",
            file=sys.stderr,
        )
        return 2
    images = iter_images(args.check_images)[:64] if args.check_images else None
    check = export_onnx(args.model, images, half_weights=args.half_weights)
    print(f"ONNX written to {Path(args.model) / 'model.onnx'}")
    print(
        f"check on {check['images']}: max |dp| = {check['max_abs_prob_diff']:.2e}, "
        f"top-1 agreement = {check['top1_agreement']:.3f}"
    )
    if args.precision:
        records = export_variants(args.model, args.precision, args.data, args.split_file)
        for precision, rec in records.items():
            speed = ""
            if "images_per_s" in rec:
                speed = (
                    f"; {rec['images_per_s']} images/s against {rec['reference_images_per_s']} "
                    f"({rec['measured_on']})"
                )
            print(
                f"{precision} variant kept: top-1 agreement {rec['top1_agreement']:.4f}, "
                f"max |dp| {rec['max_abs_prob_diff']:.4f} on {rec['images']} held-out "
                f"images{speed}"
            )
    return 0


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def whole(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def fields(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated metadata field names (age, sex, site)."""
    try:
        return withheld_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_calibrate(args: argparse.Namespace) -> int:
    cap, shift = args.ood_max_val_reject, args.shift_target
    if args.shift_only:
        report = fit_shift_warning(
            args.model, args.data, args.split_file, args.split, shift or SHIFT_TARGET
        )
        print(json.dumps(report, indent=2))
        return 0
    chosen = {} if cap is None else {"ood_max_val_reject": cap}
    chosen |= {} if shift is None else {"shift_target": shift}
    chosen |= {"triage_under_shift": True} if args.triage_under_shift else {}
    summary = calibrate_bundle(
        args.model,
        args.data,
        args.split_file,
        args.split,
        args.out,
        targets=Targets(class_bias=not args.temperature_only, **chosen),
        record_test=args.record_test,
    )
    test = summary.pop("test", None)
    print(json.dumps(summary, indent=2))
    if test is not None:
        print(f"test: {summary_line(test)}")
    return 0


def run_ensemble(args: argparse.Namespace) -> int:
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


def run_soup(args: argparse.Namespace) -> int:
    # loaded here: it needs PyTorch (the train extra); the serving install lacks it
    from dermalens.training.soup import build_soup

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


def run_check(args: argparse.Namespace) -> int:
    return check_main(args.data, args.json)


def run_serve(args: argparse.Namespace) -> int:
    # loaded here: it needs the serve extra
    from dermalens.serve import run

    workers = {"workers": args.workers} if args.workers else {}  # else $DERMALENS_WORKERS
    run(model=args.model, host=args.host, port=args.port, **workers)
    return 0


def run_info(args: argparse.Namespace) -> int:
    description = load_bundle(args.model or default_model_path()).description()
    description.pop("history", None)
    print(json.dumps(description, indent=2))
    return 0
