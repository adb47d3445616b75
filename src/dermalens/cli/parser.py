"""The `dermalens` argument parser: one sub-parser per command, each bound to its handler
in `dermalens.cli.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

from dermalens.cli import commands, user_commands
from dermalens.export.variants import BUILT
from dermalens.runtime.selection import PRECISIONS

DESCRIPTION = """`dermalens` command line: a thin shim over the library.

dermalens predict IMAGE_OR_FOLDER...       # bundled default model
dermalens predict-batch SOURCE --out DIR [--address ray://HOST:10001]
dermalens train [config.json] key=value ...
dermalens evaluate MODEL DATA [--split test --split-file runs/x/split.csv]
dermalens export MODEL [--check-images DIR]
dermalens calibrate MODEL DATA --split-file runs/x/split.csv
dermalens ensemble MODEL MODEL... --out DIR [--data DATA --split-file runs/x/split.csv]
dermalens data check DATA
dermalens serve [--model M --host H --port P --workers N]
dermalens user add --role admin NAME      # staff accounts; password from a prompt
"""
EPILOG = "Decision support only, never a diagnosis."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dermalens",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "predict",
        help="classify images or folders",
        description="Classify images, and the images in folders (recursively). An input that "
        "cannot be used gets its own 'error:' line on stderr and the others are still "
        "classified; the exit status is 1 when any input failed, 0 when all got an answer.",
    )
    s.add_argument("paths", nargs="+")
    s.add_argument(
        "--model",
        help="pin one bundle folder (default: the scope gate picks the installed model made "
        "for each image); the gate still says when an image is not what it was made for",
    )
    s.add_argument(
        "--no-gate", action="store_true", help="no scope gate: one model answers every image"
    )
    s.add_argument("--top-k", type=int, default=3)
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    s.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): the bundle's optimised graph when it was accepted and measured "
        "faster; fp32: the plain model.onnx",
    )
    s.set_defaults(func=commands.run_predict)

    s = sub.add_parser(
        "predict-batch",
        help="classify a folder or manifest of images on Ray Data, into Parquet",
        description="Classify every image of SOURCE (a folder, or a CSV / Parquet manifest "
        "with a 'path' column and optional age, sex and site columns; local or a URI such as "
        "s3://...) on Ray Data and write one Parquet row per image under OUT/bundle=<key>/. "
        "Each row says its status, the scope gate's kind of image and the model that "
        "answered (as `predict`). An image that cannot be used is a row with its 'error'; a "
        "rerun skips the images the same models already did. Needs the scale extra: "
        "pip install -e '.[scale]'.",
    )
    s.add_argument("source", help="folder or manifest (.csv, .parquet), local or a URI")
    s.add_argument("--out", required=True, help="results folder, local or a URI")
    s.add_argument(
        "--model",
        help="pin one bundle folder (default: the scope gate picks the installed model made "
        "for each image, as in `predict`); the gate still says when an image is not what it "
        "was made for",
    )
    s.add_argument(
        "--no-gate",
        action="store_true",
        help="no scope gate: one model (--model, default the bundled one) answers every image",
    )
    s.add_argument(
        "--address",
        help="Ray cluster to join, e.g. ray://HOST:10001 (default: $RAY_ADDRESS, else a local "
        "Ray on this machine); anyone who reaches it can run code: keep it on a private network",
    )
    s.add_argument(
        "--actors",
        type=commands.whole,
        default=0,
        help="classifier actors (0: one per --cpus-per-actor cores of the cluster)",
    )
    s.add_argument(
        "--cpus-per-actor",
        type=commands.positive,
        default=1,
        help="cores each actor reserves: its ONNX Runtime and decoding threads (default 1)",
    )
    s.add_argument("--batch-size", type=commands.positive, default=32)
    s.add_argument("--top-k", type=commands.positive, default=3)
    s.add_argument(
        "--progress", action="store_true", help="show Ray Data's progress bars and notes"
    )
    s.set_defaults(func=commands.run_predict_batch)

    s = sub.add_parser("train", help="train a model: [config.json|yaml] key=value ...")
    s.add_argument("settings", nargs="*")
    s.set_defaults(func=commands.run_train)

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
        type=commands.fields,
        default=(),
        metavar="FIELDS",
        help="feed only these commands.fields as missing, e.g. age or sex,site",
    )
    s.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="count byte-identical images every time (default: once, as training does)",
    )
    s.set_defaults(func=commands.run_evaluate)

    s = sub.add_parser("export", help="write model.onnx into a bundle and check it")
    s.add_argument("model")
    s.add_argument("--check-images", nargs="*", help="images or folders to compare on")
    s.add_argument("--half-weights", action="store_true", help="store model.pt in float16")
    s.add_argument(
        "--precision",
        nargs="+",
        choices=BUILT,
        default=[],
        help="also build the optimised fp32 graph (model.opt.onnx), kept only if it agrees "
        "with the plain model on the split's test images (needs --data and --split-file)",
    )
    s.add_argument("--data", help="dataset of the run (with --precision: the check images)")
    s.add_argument("--split-file", help="the run's split CSV (with --precision)")
    s.set_defaults(func=commands.run_export)

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
        type=commands.fraction,
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
    s.add_argument(
        "--shift-target",
        type=commands.fraction,
        metavar="F",
        help="the shift warning may flag at most this share of validation images (default 0.03)",
    )
    s.add_argument(
        "--triage-under-shift",
        action="store_true",
        help="choose the triage threshold on clean and corrupted validation malignant images "
        "pooled, so its sensitivity holds under acquisition shift (costs specificity)",
    )
    s.add_argument(
        "--shift-only",
        action="store_true",
        help="fit only the shift warning; the bundle's temperature, thresholds and OOD check "
        "stay exactly as they are",
    )
    s.set_defaults(func=commands.run_calibrate)

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
    s.set_defaults(func=commands.run_ensemble)

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
    s.set_defaults(func=commands.run_soup)

    s = sub.add_parser("data", help="dataset tools")
    data_sub = s.add_subparsers(dest="data_command", required=True)
    c = data_sub.add_parser("check", help="counts, unreadable images, duplicates, orphans")
    c.add_argument("data")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=commands.run_check)

    s = sub.add_parser("serve", help="start the web page and REST API")
    s.add_argument("--model")
    s.add_argument("--host", help="default $DERMALENS_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default $DERMALENS_PORT or 8000")
    s.add_argument("--workers", help="worker processes (default $DERMALENS_WORKERS or 1)")
    s.set_defaults(func=commands.run_serve)

    _user(sub)

    s = sub.add_parser("info", help="print a bundle's description")
    s.add_argument("model", nargs="?")
    s.set_defaults(func=commands.run_info)
    return p


def _user(sub) -> None:
    s = sub.add_parser(
        "user",
        help="staff accounts of the service (patient records)",
        description="Staff accounts, in the service's database (DERMALENS_DATABASE_URL or "
        "DERMALENS_DATA_DIR, as for `dermalens serve`). There is no default account: create "
        "the first admin with `dermalens user add --role admin NAME`.",
    )
    user_sub = s.add_subparsers(dest="user_command", required=True)
    c = user_sub.add_parser("add", help="create an account; the password is asked for")
    c.add_argument("username")
    c.add_argument("--role", choices=("clinician", "admin"), default="clinician")
    _password_source(c)
    c.set_defaults(func=user_commands.run_user_add)
    c = user_sub.add_parser("password", help="set a new password (lifts a lockout)")
    c.add_argument("username")
    _password_source(c)
    c.set_defaults(func=user_commands.run_user_password)
    for name, text in (
        ("disable", "disable an account: its sessions end and its tokens stop working"),
        ("enable", "enable an account again (also lifts a lockout)"),
    ):
        c = user_sub.add_parser(name, help=text)
        c.add_argument("username")
        c.set_defaults(func=user_commands.run_user_state)
    c = user_sub.add_parser("list", help="list the accounts")
    c.set_defaults(func=user_commands.run_user_list)


def _password_source(c: argparse.ArgumentParser) -> None:
    source = c.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    source.add_argument(
        "--password-env", metavar="VAR", help="read the password from environment variable VAR"
    )
