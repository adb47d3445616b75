"""Evaluation of a bundle on labelled images: `dermalens evaluate MODEL DATA [--split test]`.

Writes `metrics.json`, `predictions.csv`, `confusion.png` and `reliability.png`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dermalens.bundle import Bundle, atomic_write_text, load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError
from dermalens.data.splits import load_split
from dermalens.imageio import ImageError
from dermalens.metrics import classification_metrics
from dermalens.predict import Predictor


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
        )
        return {k: self.metrics[k] for k in keep if k in self.metrics}


def predict_table(
    predictor: Predictor, table: pd.DataFrame, batch_size: int = 32, progress: bool = True
) -> tuple[np.ndarray, list[str]]:
    """Probabilities for every row (NaN rows where the image is unreadable) and problems."""
    from dermalens import metadata

    probs = np.full((len(table), len(predictor.bundle.classes)), np.nan)
    problems: list[str] = []
    use_meta = bool(predictor.bundle.metadata_fields)
    rows = list(table.itertuples(index=False))
    for start in tqdm(
        range(0, len(rows), batch_size), desc="evaluate", disable=not progress, leave=False
    ):
        chunk, index, metas = [], [], []
        for i, row in enumerate(rows[start : start + batch_size], start):
            try:
                chunk.append(predictor.prepare(row.path))
                index.append(i)
                if use_meta:
                    metas.append(metadata.encode(row.age, row.sex, row.site))
            except ImageError as exc:
                problems.append(str(exc))
        if chunk:
            meta = np.stack(metas) if use_meta else None
            probs[index] = predictor.probabilities(np.stack(chunk), meta)
    return probs, problems


def evaluate_table(
    bundle: Bundle,
    table: pd.DataFrame,
    out_dir: Path | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> EvalResult:
    """Evaluate on a dataset table (columns as `data.records.COLUMNS`)."""
    predictor = Predictor(bundle, backend)
    unknown = sorted(set(table["label"]) - set(bundle.classes))
    if unknown:
        raise DataError(
            f"labels {unknown} are not among the model's classes {bundle.classes}; "
            f"pass a class subset of the data the model knows"
        )
    probs, problems = predict_table(predictor, table, progress=progress)
    ok = ~np.isnan(probs).any(axis=1)
    labels = table["label"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy()
    metrics = classification_metrics(labels[ok], probs[ok], bundle.classes)
    metrics["unreadable"] = problems
    metrics["model"] = bundle.version
    preds = pd.DataFrame(
        {"image_id": table["image_id"].to_numpy(), "label": table["label"].to_numpy()}
    )
    preds["predicted"] = [
        bundle.classes[i] if k else "" for i, k in zip(np.nan_to_num(probs).argmax(1), ok)
    ]
    for j, code in enumerate(bundle.classes):
        preds[f"p_{code}"] = probs[:, j].round(6)
    if out_dir is not None:
        write_report(metrics, preds, Path(out_dir))
    return EvalResult(metrics, preds, out_dir)


def write_report(metrics: dict, preds: pd.DataFrame, out_dir: Path) -> None:
    from dermalens.plots import plot_confusion, plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    preds.to_csv(out_dir / "predictions.csv", index=False)
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
) -> EvalResult:
    """Evaluate bundle `model` on dataset folder `data` (all of it, or one part of a split)."""
    bundle = load_bundle(model)
    dataset = load_dataset(data)
    table = dataset.table
    if split != "all":
        if split_file is None:
            raise DataError(f"split={split!r} needs a split CSV (the run folder's split.csv)")
        table = load_split(dataset, Path(split_file))
        table = table[table["split"] == split]
    table = table[table["label"].isin(bundle.classes)] if split == "all" else table
    if table.empty:
        raise DataError(f"{data}: no images of the model's classes {bundle.classes}")
    return evaluate_table(
        bundle, table.reset_index(drop=True), Path(out_dir) if out_dir else None, backend, progress
    )
