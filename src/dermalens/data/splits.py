"""Train / val / test splits grouped by patient or lesion, stratified by class, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermalens.data.records import DataError, Dataset, group_ids

SPLITS = ("train", "val", "test")


def grouped_split(
    dataset: Dataset, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> pd.DataFrame:
    """Return the dataset table with `group` and `split` columns.

    Whole groups go to one split. Groups are stratified by their majority label: within
    each class, shuffled groups fill val and test up to their share of that class's
    images, the rest go to train. Deterministic for a given table and seed.
    """
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise DataError(f"split fractions {fractions} must be >= 0 and sum to 1")
    table = dataset.table.copy()
    table["group"] = group_ids(table)
    sizes = table.groupby("group").size()
    majority = table.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(majority.unique()):
        groups = np.array(sorted(majority.index[majority == label]))
        rng.shuffle(groups)
        total = sizes[groups].sum()
        targets = {"val": fractions[1] * total, "test": fractions[2] * total}
        filled = {"val": 0, "test": 0}
        for group in groups:
            # Put the group where it is furthest below target; train takes the rest.
            need = {k: targets[k] - filled[k] for k in targets}
            split = max(need, key=lambda k: need[k])
            if need[split] >= sizes[group] / 2:
                assignment[group] = split
                filled[split] += sizes[group]
            else:
                assignment[group] = "train"
    table["split"] = table["group"].map(assignment)
    return table


def save_split(table: pd.DataFrame, path: Path) -> None:
    table[["image_id", "label", "group", "split"]].to_csv(path, index=False)


def load_split(dataset: Dataset, path: Path) -> pd.DataFrame:
    """Re-attach a saved split CSV to a dataset; every image must have a split."""
    saved = pd.read_csv(path, dtype=str)
    for column in ("image_id", "split"):
        if column not in saved.columns:
            raise DataError(f"{path}: missing column {column!r}")
    table = dataset.table.copy()
    table["group"] = group_ids(table)
    table["split"] = table["image_id"].map(dict(zip(saved["image_id"], saved["split"])))
    missing = table["split"].isna().sum()
    if missing:
        raise DataError(f"{path}: {missing} images of {dataset.root} have no split")
    return table


def check_no_leak(table: pd.DataFrame) -> None:
    """Raise if any group occurs in more than one split."""
    per_group = table.groupby("group")["split"].nunique()
    leaked = per_group[per_group > 1]
    if len(leaked):
        raise DataError(f"groups in more than one split: {list(leaked.index[:5])}")


def check_not_trained_on(
    trained_on: pd.DataFrame, table: pd.DataFrame, own: Path, other: Path
) -> None:
    """Refuse a split (`table`, from `other`) whose val or test part holds an image, or any
    other image of a group (patient, else lesion), that the `train` part of `trained_on`
    (a run's own split, from `own`) holds. Both come from `load_split`, with its `group`."""
    trained = trained_on.loc[trained_on["split"] == "train", ["image_id", "group"]]
    held = table[table["split"].isin(["val", "test"])]
    same = held["image_id"].isin(trained["image_id"])
    kin = held["group"].isin(trained["group"]) & ~same
    if same.any() or kin.any():
        raise DataError(
            f"{other}: its val/test parts hold {int(same.sum())} images the run trained on "
            f"and {int(kin.sum())} other images of lesions it trained on (per {own}), e.g. "
            f"{', '.join(held.loc[same | kin, 'image_id'].head(3))}; choosing or testing on "
            "them would overstate the results"
        )
