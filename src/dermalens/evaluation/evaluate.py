"""Evaluation of a bundle on labelled images: `dermalens evaluate MODEL DATA [--split test]`.

Writes `metrics.json`, `predictions.csv`, `confusion.png` and `reliability.png`. Besides
the classification metrics, `metrics["decision"]` holds triage sensitivity / specificity
and abstention coverage / selective accuracy at the bundle's thresholds, and
`metrics["ood"]` the share of these (skin) images the OOD check rejects, if it has one.
A model with a class of unknown malignancy gives no triage: `metrics["decision"]["triage"]`
says "skipped" and why, and `p_malignant` sums only the classes flagged malignant.
`metrics["shift"]` is the shift warning's share and batch test (when the bundle has one),
`metrics["external"]` the clinic's view at the shipped operating point beside the
bundle's own test record (`evaluation.external`), so `dermalens evaluate BUNDLE FOLDER`
on a clinic's own labelled images says whether the recorded numbers carry over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dermalens import patient
from dermalens.bundle import Bundle, load_bundle
from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError
from dermalens.data.splits import load_split
from dermalens.evaluation.external import external_report
from dermalens.evaluation.metrics import classification_metrics
from dermalens.evaluation.plots import plot_confusion, plot_reliability
from dermalens.evaluation.subgroups import subgroup_metrics, subgroup_table
from dermalens.evaluation.thresholds import decision_metrics
from dermalens.files import atomic_write_text, now
from dermalens.imageio import ImageError
from dermalens.runtime.ood import PIXEL_STATS, OodDetector, pixel_stats, pooled
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.shift import STATS, acquisition_stats


@dataclass
class EvalResult:
    metrics: dict
    predictions: pd.DataFrame
    out_dir: Path | None

    def metrics_brief(self) -> dict:
        keep = (
            "n",
            "accuracy",
            "balanced_accuracy",
            "macro_f1",
            "macro_auc",
            "ece",
            "nll",
            "per_class",
            "decision",
            "ood",
            "shift",
        )
        return {k: self.metrics[k] for k in keep if k in self.metrics}


@dataclass
class TableRun:
    """Raw model outputs for every row of a table; NaN rows where the image is unreadable."""

    logits: np.ndarray  # views x rows x classes (1 view, or 4 with TTA), before temperature
    features: np.ndarray  # rows x C: view 0's feature map, mean-pooled as the head pools it
    pixels: np.ndarray  # rows x PIXEL_STATS: `ood.pixel_stats` of view 0
    problems: list[str] = field(default_factory=list)
    # rows x len(shift.STATS): `shift.acquisition_stats` of view 0, the OOD columns NaN
    acquisition: np.ndarray | None = None

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.logits).any(axis=(0, 2))


def run_table(
    predictor: Predictor,
    table: pd.DataFrame,
    batch_size: int = 32,
    progress: bool = True,
    tta: bool | None = None,
    withhold: tuple[str, ...] = (),
) -> TableRun:
    """Run the model over every row's image and, if the model uses it, metadata.

    `withhold` feeds the named fields (of `patient.ALL_FIELDS`) as missing; all of them is
    what the model does when a clinic sends only the image."""

    hidden = patient.withheld_fields(withhold)

    n, views = len(table), 4 if (predictor.tta if tta is None else tta) else 1
    logits = np.full((views, n, len(predictor.bundle.classes)), np.nan, dtype=np.float32)
    features = np.empty((n, 0), dtype=np.float32)
    pixels = np.full((n, PIXEL_STATS), np.nan, dtype=np.float32)
    acquisition = np.full((n, len(STATS)), np.nan)
    problems: list[str] = []
    fields = tuple(predictor.bundle.metadata_fields)
    rows = list(table.itertuples(index=False))
    for start in tqdm(range(0, n, batch_size), desc="evaluate", disable=not progress, leave=False):
        chunk, index, metas = [], [], []
        for i, row in enumerate(rows[start : start + batch_size], start):
            try:
                chunk.append(predictor.prepare(row.path))
                index.append(i)
                if fields:
                    given = patient.row_values(row, fields)
                    shown = {k: v for k, v in given.items() if k not in hidden}
                    metas.append(patient.encode_fields(fields, shown))
            except ImageError as exc:
                problems.append(str(exc))
        if not chunk:
            continue
        batch = np.stack(chunk)
        out, fmap = predictor.forward(batch, np.stack(metas) if fields else None, tta)
        pooled_fmap = pooled(fmap)
        if features.shape[1] == 0:
            features = np.full((n, pooled_fmap.shape[1]), np.nan, dtype=np.float32)
        logits[:, index], features[index] = out, pooled_fmap
        pixels[index] = pixel_stats(batch, predictor.pre)
        acquisition[index] = acquisition_stats(batch, predictor.pre)
    return TableRun(logits, features, pixels, problems, acquisition)


def run_stats(run: TableRun, detector: OodDetector | None) -> np.ndarray:
    """A table run's acquisition statistics of its readable rows (`runtime.shift`), with the
    OOD check's feature and colour scores filled in when there is one."""
    ok = run.ok
    stats = np.array(run.acquisition[ok], np.float64)
    if detector is not None:
        stats[:, STATS.index("ood_score")] = detector.score(run.features[ok])
        colours = detector.colour_score(run.pixels[ok])
        if colours is not None:
            stats[:, STATS.index("colour_score")] = colours
    return stats


def shift_rates(predictor: Predictor, run: TableRun) -> tuple[np.ndarray | None, dict | None]:
    """Per readable row: flagged by the shift warning; and the share with the batch test."""
    if predictor.shift is None:
        return None, None
    flags, _ = predictor.shift.check(run_stats(run, predictor.ood))
    share = float(flags.mean()) if len(flags) else 0.0
    return flags, {"flagged_share": share, "batch": predictor.shift.batch_warning(flags)}


def evaluate_table(
    bundle: Bundle,
    table: pd.DataFrame,
    out_dir: Path | None = None,
    backend: str = "auto",
    progress: bool = True,
    tta: bool = False,
    use_metadata: bool = True,
    withhold: tuple[str, ...] = (),
    left_out: dict[str, int] | None = None,
) -> EvalResult:
    """Evaluate on a dataset table (columns as `data.records.COLUMNS`); `use_metadata=False`
    hides the patient metadata from a model that takes it, `withhold` hides the named
    fields only (as when a clinic leaves them empty). `left_out`: images of labels the
    model does not know, left out before (recorded in the report)."""
    withhold = patient.ALL_FIELDS if not use_metadata else patient.withheld_fields(withhold)

    predictor = Predictor(bundle, backend, tta=tta)
    unknown = sorted(set(table["label"]) - set(bundle.classes))
    if unknown:
        raise DataError(
            f"labels {unknown} are not among the model's classes {bundle.classes}; "
            f"pass a class subset of the data the model knows"
        )
    run = run_table(predictor, table, progress=progress, withhold=withhold)
    probs, ok = predictor.calibrated(run.logits), run.ok
    answers = predictor.decide(np.nan_to_num(probs))
    labels = table["label"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy()
    metrics = classification_metrics(labels[ok], probs[ok], bundle.classes, answers[ok])
    ood = predictor.ood.check(run.features[ok], run.pixels[ok]) if predictor.ood else None
    metrics["decision"] = decision_metrics(
        labels[ok],
        probs[ok],
        answers[ok],
        bundle.malignant,  # a class of unknown malignancy (None): triage "skipped"
        predictor.uncertain_below,
        predictor.triage_at,
        None if ood is None else ood[1],
        bundle.classes,
    )
    metrics["ood"] = None if ood is None else ood_rates(ood[1], labels[ok], bundle.classes)
    shifted, metrics["shift"] = shift_rates(predictor, run)
    not_skin = np.zeros(int(ok.sum()), bool) if ood is None else ood[1]
    confidence = probs[ok][np.arange(int(ok.sum())), answers[ok]]
    metrics["external"] = external_report(
        metrics,
        labels[ok],
        probs[ok],
        bundle.classes,
        bundle.malignant,
        (confidence < predictor.uncertain_below) | not_skin,
        not_skin,
        predictor.triage_at,
        metrics["shift"],
        bundle.metrics.get("test"),
    )
    if not any(f is None for f in bundle.malignant):  # by age band, sex, site, skin type
        metrics["subgroups"] = subgroup_metrics(
            table[ok],
            labels[ok],
            probs[ok],
            answers[ok],
            bundle.malignant,
            predictor.triage_at,
            not_skin,
        )
    metrics["tta"] = tta
    used = list(bundle.metadata_fields)
    metrics["metadata"] = bool(used) and not set(used) <= set(withhold)
    metrics["withheld"] = [f for f in used if f in withhold]
    metrics["unreadable"] = run.problems
    metrics["left_out"] = dict(left_out or {})
    metrics["model"] = bundle.version
    preds = pd.DataFrame(
        {"image_id": table["image_id"].to_numpy(), "label": table["label"].to_numpy()}
    )
    preds["predicted"] = [bundle.classes[i] if k else "" for i, k in zip(answers, ok)]
    for j, code in enumerate(bundle.classes):
        preds[f"p_{code}"] = probs[:, j].round(6)
    preds["p_malignant"] = probs[:, predictor.malignant_mask].sum(axis=1).round(6)
    if ood is not None:
        preds["ood_score"], preds["not_skin"] = np.nan, False
        preds.loc[ok, "ood_score"] = ood[0].round(4)
        preds.loc[ok, "not_skin"] = ood[1]
    if shifted is not None:
        preds["shifted"] = False
        preds.loc[ok, "shifted"] = shifted
    if out_dir is not None:
        write_report(metrics, preds, Path(out_dir))
    return EvalResult(metrics, preds, out_dir)


def record_test(
    bundle: Bundle, table: pd.DataFrame, run_dir: Path, progress: bool = True
) -> EvalResult:
    """Evaluate on the test part and store the numbers in the bundle's description.

    A model that takes metadata is evaluated twice: with the patients' metadata
    (`metrics["test"]`) and with every field missing (`metrics["test_image_only"]`)."""
    result = evaluate_table(bundle, table, Path(run_dir) / "eval-test", progress=progress)
    bundle.metrics["test"] = result.metrics_brief()
    if bundle.metadata_fields:
        image_only = evaluate_table(
            bundle,
            table,
            Path(run_dir) / "eval-test-image-only",
            progress=progress,
            use_metadata=False,
        )
        bundle.metrics["test_image_only"] = image_only.metrics_brief()
    bundle.info["evaluated"] = now()
    bundle.save_description()
    return result


def ood_rates(not_skin: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """How many of these skin images the OOD check rejects, overall and per class."""
    return {
        "rejected": float(not_skin.mean()) if len(not_skin) else 0.0,
        "n": int(len(not_skin)),
        "per_class": {
            c: float(not_skin[labels == i].mean())
            for i, c in enumerate(classes)
            if (labels == i).any()
        },
    }


def write_report(metrics: dict, preds: pd.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    preds.to_csv(out_dir / "predictions.csv", index=False)
    if metrics.get("subgroups"):
        subgroup_table(metrics["subgroups"]).to_csv(out_dir / "subgroups.csv", index=False)
    plot_confusion(metrics["confusion_matrix"], metrics["classes"], out_dir / "confusion.png")
    plot_reliability(metrics["calibration_bins"], metrics["ece"], out_dir / "reliability.png")


def evaluate(
    model: str | Path,
    data: str | Path,
    split: str = "all",
    split_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    backend: str = "auto",
    progress: bool = True,
    tta: bool = False,
    use_metadata: bool = True,
    keep_duplicates: bool = False,
    withhold: tuple[str, ...] = (),
) -> EvalResult:
    """Evaluate bundle `model` on dataset folder `data` (all of it, or one part of a split).

    Exact duplicate images are counted once (as training does), unless `keep_duplicates`."""
    withhold = patient.withheld_fields(withhold)  # an unknown name fails before any work
    bundle = load_bundle(model)
    dataset = load_dataset(data)
    table = dataset.table
    if split != "all":
        if split_file is None:
            raise DataError(f"split={split!r} needs a split CSV (the run folder's split.csv)")
        table = load_split(dataset, Path(split_file))
    if not keep_duplicates:
        table = drop_duplicate_extras(table)
    if split != "all":
        table = table[table["split"] == split]
    known = table["label"].isin(bundle.classes)
    left_out = table.loc[~known, "label"].value_counts().to_dict() if split == "all" else {}
    table = table[known] if split == "all" else table
    if table.empty:
        raise DataError(f"{data}: no images of the model's classes {bundle.classes}")
    return evaluate_table(
        bundle,
        table.reset_index(drop=True),
        Path(out_dir) if out_dir else None,
        backend,
        progress,
        tta,
        use_metadata,
        withhold,
        {str(k): int(v) for k, v in left_out.items()},
    )
