"""Corruption benchmark in the manner of ImageNet-C: how a bundle holds up as acquisition drifts.

    python benchmarks/robustness.py src/dermalens/bundled/default ../shared/data/ham10000 \
        --split-file benchmarks/splits/ham10000-seed0.csv --split test --out benchmarks/results

Every image of the split part is decoded once (`imageio.load_image`, at its own resolution),
then corrupted by each of `evaluation.corruptions.CORRUPTIONS` at each severity (seeded per
image by `image_seed(image_id)`, so a run is reproducible image by image), and only then
preprocessed by the bundle (`Predictor.prepare`: the model's resize and normalisation).
The model runs in batches through the library's own path (`Predictor.forward`, calibrated
probabilities, `Predictor.decide`, the bundle's OOD check), with the patient metadata fed from
the table as `evaluation.evaluate.run_table` feeds it.

Per condition (clean, and every corruption x severity):

- balanced accuracy (and accuracy, macro AUC, ECE) of the answers `Predictor.decide` gives;
- malignant AUC: P(malignant) = the sum of the malignant classes' calibrated probabilities,
  against the bundle's malignant flag of the true class;
- triage at the bundle's threshold (`Predictor.triage_at`): sensitivity = malignant images
  flagged (P(malignant) >= threshold) and not turned away by the OOD check; specificity =
  benign images not flagged and not turned away. An image turned away ("not_skin") gets no
  triage answer, so it is a miss for a malignant lesion and no clearance for a benign one;
  `turned_away` is that share (all images, and among malignant / benign), `uncertain` the share
  answered "uncertain" (not turned away, answer's probability below `uncertain_below`);
  `malignant_flagged_or_uncertain` counts an "uncertain" malignant as caught (referred).

Summary: the mean over corruptions and severities of balanced accuracy / clean balanced
accuracy ("relative balanced accuracy", 1 = unaffected), the same per corruption and per
family, and per corruption the worst triage sensitivity at severity <= 3; corruptions whose
worst is below 0.90 are listed as breaking triage.

Writes NAME.json (every row, the summary, the command, model version, CPU, time taken) and
NAME.png (balanced accuracy and triage sensitivity against severity, one line per corruption,
clean dashed) to --out (default runs/robustness/); NAME defaults to robustness-<model folder>.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dermalens import patient
from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError
from dermalens.data.splits import load_split
from dermalens.evaluation import corruptions as C
from dermalens.evaluation.metrics import classification_metrics
from dermalens.files import atomic_write_text, now
from dermalens.imageio import ImageError, load_image
from dermalens.runtime.predictor import Predictor

TRIAGE_FLOOR = 0.90  # triage sensitivity below this at severity <= BREAK_SEVERITY "breaks" triage
BREAK_SEVERITY = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="bundle folder")
    ap.add_argument("data", help="dataset folder (HAM10000 / ISIC 2019 / image folders)")
    ap.add_argument("--split-file", required=True, help="split CSV (image_id, split)")
    ap.add_argument("--split", default="test", help="which part of the split (default test)")
    ap.add_argument(
        "--severities", type=int, nargs="+", default=list(C.SEVERITIES), choices=C.SEVERITIES
    )
    ap.add_argument(
        "--corruptions",
        nargs="+",
        default=list(C.CORRUPTIONS),
        metavar="NAME",
        help=f"default: all {len(C.CORRUPTIONS)} ({', '.join(C.CORRUPTIONS)})",
    )
    ap.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate N images, evenly spaced over the part sorted by class and image id",
    )
    ap.add_argument("--out", default="runs/robustness", help="output folder")
    ap.add_argument("--name", default=None, help="output file stem (robustness-<model folder>)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="inference threads (0: every core)")
    ap.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    ap.add_argument("--seed", type=int, default=0, help="mixed into image_seed(image_id, seed)")
    ap.add_argument("--keep-duplicates", action="store_true", help="count exact duplicates")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    for name in args.corruptions:
        if name not in C.CORRUPTIONS:
            ap.error(f"unknown corruption {name!r}; valid: {', '.join(C.CORRUPTIONS)}")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    args.severities = sorted(set(args.severities))
    args.corruptions = list(dict.fromkeys(args.corruptions))
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def load_table(args: argparse.Namespace, classes: list[str]) -> pd.DataFrame:
    """The split part, duplicates dropped (as `evaluate` does), optionally thinned to --limit."""
    table = load_split(load_dataset(args.data), Path(args.split_file))
    if not args.keep_duplicates:
        table = drop_duplicate_extras(table)
    table = table[table["split"] == args.split]
    unknown = sorted(set(table["label"]) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's classes {classes}")
    if table.empty:
        raise DataError(f"{args.data}: no images in split part {args.split!r}")
    table = table.sort_values(["label", "image_id"]).reset_index(drop=True)
    if args.limit is not None and args.limit < len(table):
        keep = np.unique(np.linspace(0, len(table) - 1, args.limit).round().astype(int))
        table = table.iloc[keep].reset_index(drop=True)
    return table


def metadata(predictor: Predictor, table: pd.DataFrame) -> np.ndarray | None:
    """The patient vectors `run_table` feeds (age, sex, site from the table), or None."""
    if not predictor.bundle.metadata_fields:
        return None
    return np.stack([patient.encode(age=r.age, sex=r.sex, site=r.site) for r in table.itertuples()])


def decode(table: pd.DataFrame) -> tuple[list, list[str]]:
    """Each image decoded once; None (and a problem line) where it is unreadable."""
    images, problems = [], []
    for path in table["path"]:
        try:
            images.append(load_image(path))
        except ImageError as exc:
            images.append(None)
            problems.append(str(exc))
    return images, problems


def run_condition(
    predictor: Predictor,
    images: list,
    seeds: list[int],
    meta: np.ndarray | None,
    corruption: str | None,
    severity: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Calibrated probabilities (N x classes), not-skin flags and the corruption seconds."""
    n = len(images)
    probs = np.empty((n, len(predictor.bundle.classes)), np.float64)
    not_skin = np.zeros(n, bool)
    corrupt_s = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        t0 = time.perf_counter()
        shifted = [
            images[i] if corruption is None else C.apply(images[i], corruption, severity, seeds[i])
            for i in range(start, stop)
        ]
        corrupt_s += time.perf_counter() - t0
        batch = np.stack([predictor.prepare(image) for image in shifted])
        logits, fmap = predictor.forward(batch, None if meta is None else meta[start:stop])
        probs[start:stop] = predictor.calibrated(logits)
        ood = predictor.ood_check(batch, fmap)
        if ood is not None:
            not_skin[start:stop] = ood[1]
    return probs, not_skin, corrupt_s


def _rate(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def score(
    predictor: Predictor, labels: np.ndarray, probs: np.ndarray, not_skin: np.ndarray
) -> dict:
    """One condition's row (see the module docstring for the definitions)."""
    from sklearn.metrics import roc_auc_score

    classes = predictor.bundle.classes
    answers = predictor.decide(probs)
    m = classification_metrics(labels, probs, classes, answers)
    is_mal = predictor.malignant_mask[labels]
    p_mal = probs[:, predictor.malignant_mask].sum(axis=1)
    flagged = p_mal >= predictor.triage_at
    answered = ~not_skin
    uncertain = answered & (probs[np.arange(len(labels)), answers] < predictor.uncertain_below)
    both = 0 < is_mal.sum() < len(is_mal)
    return {
        "n": int(len(labels)),
        "n_malignant": int(is_mal.sum()),
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_auc": m["macro_auc"],
        "ece": m["ece"],
        "malignant_auc": float(roc_auc_score(is_mal, p_mal)) if both else None,
        "triage_sensitivity": _rate(flagged & answered, is_mal),
        "triage_specificity": _rate(~flagged & answered, ~is_mal),
        "malignant_flagged_or_uncertain": _rate((flagged | uncertain) & answered, is_mal),
        "turned_away": float(not_skin.mean()),
        "turned_away_malignant": _rate(not_skin, is_mal),
        "turned_away_benign": _rate(not_skin, ~is_mal),
        "uncertain": float(uncertain.mean()),
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict], corruptions: list[str]) -> dict:
    clean = next(r for r in rows if r["corruption"] == "clean")
    base = clean["balanced_accuracy"]
    shifted = [r for r in rows if r["corruption"] != "clean"]

    def relative(r: dict) -> float | None:
        return r["balanced_accuracy"] / base if base else None

    per: dict[str, dict] = {}
    for name in corruptions:
        mine = [r for r in shifted if r["corruption"] == name]
        early = [r for r in mine if r["severity"] <= BREAK_SEVERITY]
        sens = [(r["triage_sensitivity"], r["severity"]) for r in early]
        sens = [s for s in sens if s[0] is not None]
        worst = min(sens) if sens else (None, None)
        per[name] = {
            "family": C.CORRUPTIONS[name].family,
            "relative_balanced_accuracy": _mean([relative(r) for r in mine]),
            "mean_balanced_accuracy": _mean([r["balanced_accuracy"] for r in mine]),
            "mean_malignant_auc": _mean([r["malignant_auc"] for r in mine]),
            f"worst_triage_sensitivity_sev_le{BREAK_SEVERITY}": worst[0],
            f"worst_triage_sensitivity_sev_le{BREAK_SEVERITY}_at": worst[1],
            "max_turned_away": max((r["turned_away"] for r in mine), default=None),
        }
    key = f"worst_triage_sensitivity_sev_le{BREAK_SEVERITY}"
    families: dict[str, list] = {}
    for entry in per.values():
        families.setdefault(entry["family"], []).append(entry["relative_balanced_accuracy"])
    return {
        "clean_balanced_accuracy": base,
        "clean_malignant_auc": clean["malignant_auc"],
        "clean_triage_sensitivity": clean["triage_sensitivity"],
        "clean_triage_specificity": clean["triage_specificity"],
        "clean_turned_away": clean["turned_away"],
        "mean_relative_balanced_accuracy": _mean([relative(r) for r in shifted]),
        "mean_corrupted_balanced_accuracy": _mean([r["balanced_accuracy"] for r in shifted]),
        "mean_corrupted_malignant_auc": _mean([r["malignant_auc"] for r in shifted]),
        "per_family_relative_balanced_accuracy": {f: _mean(v) for f, v in families.items()},
        "per_corruption": per,
        "triage_floor": TRIAGE_FLOOR,
        f"breaks_triage_sev_le{BREAK_SEVERITY}": [
            name for name, e in per.items() if e[key] is not None and e[key] < TRIAGE_FLOOR
        ],
    }


def plot(rows: list[dict], corruptions: list[str], severities: list[int], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = next(r for r in rows if r["corruption"] == "clean")
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    tab20 = plt.get_cmap("tab20")
    panels = (
        ("balanced_accuracy", "balanced accuracy"),
        ("triage_sensitivity", "triage sensitivity (turned away = missed)"),
        ("turned_away", "share turned away (not_skin)"),
    )
    for ax, (key, label) in zip(axes, panels):
        for k, name in enumerate(corruptions):
            mine = sorted((r for r in rows if r["corruption"] == name), key=lambda r: r["severity"])
            xs = [r["severity"] for r in mine if r[key] is not None]
            ys = [r[key] for r in mine if r[key] is not None]
            # the ten dark tab20 colours with solid lines, then the ten light ones dash-dotted
            colour, style = tab20((2 * k) % 20 + (k // 10) % 2), "-" if k % 20 < 10 else "-."
            ax.plot(xs, ys, style, marker="o", ms=3, color=colour, label=name)
        if clean[key] is not None:
            ax.axhline(clean[key], color="black", ls="--", lw=1.2, label="clean")
        if key == "triage_sensitivity":
            ax.axhline(TRIAGE_FLOOR, color="grey", ls=":", lw=1, label=f"{TRIAGE_FLOOR:.2f}")
        ax.set_xticks(severities)
        ax.set_xlabel("severity")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float | None, width: int = 6) -> str:
    return "-".rjust(width) if value is None else f"{value:{width}.3f}"


def table_text(rows: list[dict], corruptions: list[str], severities: list[int]) -> str:
    """Compact: per corruption, balanced accuracy and triage sensitivity at each severity."""
    clean = next(r for r in rows if r["corruption"] == "clean")
    cols = "".join(f"{'s' + str(s):>7}" for s in severities)
    lines = [
        f"{'':16}{'balanced accuracy':<{7 * len(severities)}}   triage sensitivity",
        f"{'corruption':16}{cols}   {cols}   max away",
        f"{'clean':16}{_fmt(clean['balanced_accuracy'], 7) * len(severities)}   "
        f"{_fmt(clean['triage_sensitivity'], 7) * len(severities)}   {_fmt(clean['turned_away'])}",
    ]
    for name in corruptions:
        by = {r["severity"]: r for r in rows if r["corruption"] == name}
        bal = "".join(_fmt(by[s]["balanced_accuracy"], 7) for s in severities)
        sens = "".join(_fmt(by[s]["triage_sensitivity"], 7) for s in severities)
        away = max(by[s]["turned_away"] for s in severities)
        lines.append(f"{name:16}{bal}   {sens}   {_fmt(away)}")
    return "\n".join(lines)


def _rounded(row: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, t_start = now(), time.perf_counter()
    predictor = Predictor(args.model, args.backend, threads=args.threads)
    bundle = predictor.bundle
    table = load_table(args, bundle.classes)
    images, problems = decode(table)
    ok = np.array([image is not None for image in images], bool)
    table = table[ok].reset_index(drop=True)
    images = [image for image in images if image is not None]
    if not images:
        raise DataError("no readable images")
    labels = table["label"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy(int)
    seeds = [C.image_seed(str(i), args.seed) for i in table["image_id"]]
    meta = metadata(predictor, table)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"{len(images)} images, {len(args.corruptions)} corruptions x {args.severities}")

    conditions = [("clean", 0)] + [(c, s) for c in args.corruptions for s in args.severities]
    rows, corrupt_total, model_images = [], 0.0, 0
    for k, (name, severity) in enumerate(conditions, 1):
        t0 = time.perf_counter()
        probs, not_skin, corrupt_s = run_condition(
            predictor,
            images,
            seeds,
            meta,
            None if name == "clean" else name,
            severity,
            args.batch_size,
        )
        row = {"corruption": name, "family": "" if name == "clean" else C.CORRUPTIONS[name].family}
        row |= {"severity": severity, **score(predictor, labels, probs, not_skin)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(_rounded(row))
        corrupt_total += corrupt_s
        model_images += len(images)
        log(
            f"[{k}/{len(conditions)}] {name} s{severity}: bal_acc {row['balanced_accuracy']:.3f} "
            f"sens {_fmt(row['triage_sensitivity'], 0)} away {row['turned_away']:.3f} "
            f"({row['seconds']:.1f}s)"
        )

    seconds = time.perf_counter() - t_start
    summary = summarise(rows, args.corruptions)
    name = args.name or f"robustness-{Path(args.model).resolve().name}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = table["label"].value_counts()
    report = {
        "command": "python benchmarks/robustness.py " + shlex.join(argv or sys.argv[1:]),
        "started": started,
        "model": str(args.model),
        "model_version": bundle.version,
        "data": str(args.data),
        "split_file": str(args.split_file),
        "split": args.split,
        "limit": args.limit,
        "n_images": len(images),
        "class_counts": {c: int(counts.get(c, 0)) for c in bundle.classes},
        "unreadable": problems,
        "corruptions": args.corruptions,
        "severities": args.severities,
        "seed": args.seed,
        "thresholds": {
            "triage_malignant": predictor.triage_at,
            "uncertain_below": predictor.uncertain_below,
            "ood_check": predictor.ood is not None,
        },
        "metadata_fed": meta is not None,
        "cpu": cpu_model(),
        "threads": args.threads,
        "backend": type(predictor.engine).__name__,
        "seconds": round(seconds, 1),
        "corruption_seconds": round(corrupt_total, 1),
        "predictions": model_images,
        "images_per_second": round(model_images / seconds, 1),
        "definitions": {
            "balanced_accuracy": "mean recall over the classes present, of Predictor.decide",
            "malignant_auc": "ROC AUC of P(malignant) = sum of the malignant classes' "
            "calibrated probabilities, against the true class's malignant flag",
            "triage_sensitivity": "malignant images with P(malignant) >= triage threshold and "
            "not turned away (not_skin), over all malignant images",
            "triage_specificity": "benign images with P(malignant) < triage threshold and not "
            "turned away, over all benign images",
            "turned_away": "share answered not_skin by the bundle's OOD check",
            "uncertain": "share not turned away whose answer's probability < uncertain_below",
            "relative_balanced_accuracy": "balanced accuracy / clean balanced accuracy",
        },
        "summary": summary,
        "rows": rows,
    }
    atomic_write_text(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
    plot(
        rows,
        args.corruptions,
        args.severities,
        out / f"{name}.png",
        f"{bundle.version} on {len(images)} {args.split} images of {Path(args.data).name}",
    )
    print(table_text(rows, args.corruptions, args.severities))
    rel = summary["mean_relative_balanced_accuracy"]
    broken = summary[f"breaks_triage_sev_le{BREAK_SEVERITY}"]
    print(
        f"clean balanced accuracy {summary['clean_balanced_accuracy']:.3f}; mean relative "
        f"balanced accuracy {_fmt(rel, 0)}; triage sensitivity < {TRIAGE_FLOOR:.2f} at "
        f"severity <= {BREAK_SEVERITY}: {', '.join(broken) or 'none'}"
    )
    print(
        f"{seconds:.0f} s, {model_images / seconds:.0f} images/s on {cpu_model()}; "
        f"wrote {out / name}.json and .png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
