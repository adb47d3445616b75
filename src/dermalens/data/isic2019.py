"""ISIC 2019: a one-hot ground-truth CSV, an optional metadata CSV, images in one folder.

File names may carry a `_downsampled` suffix (ISIC_0000000_downsampled.jpg) in the CSVs,
on disk, or both; ids are matched and stored without it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermalens.data.ham10000 import index_images, read_csv
from dermalens.data.records import (
    IMAGE_WITHOUT_LABEL,
    LABEL_WITHOUT_IMAGE,
    DataError,
    Dataset,
    make_table,
    normalise_age,
    normalise_sex,
    normalise_site,
)
from dermalens.taxonomy import canonical

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGE_DIRS = (
    "ISIC_2019_Training_Input",
    "ISIC_2019_Training_Input/ISIC_2019_Training_Input",
    "images",
    ".",
)
LABEL_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
SUFFIX = "_downsampled"
# anatom_site_general values that are not already records.SITES values.
SITE_ALIASES = {"anterior torso": "trunk", "posterior torso": "trunk", "lateral torso": "trunk"}


def image_key(name: str) -> str:
    """The image id without the `_downsampled` suffix."""
    name = name.strip()
    return name.removesuffix(SUFFIX)


def _text(value: object) -> str | None:
    """A stripped string, or None for NaN / empty cells."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def normalise_isic_site(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return normalise_site(SITE_ALIASES.get(value, value))


def one_hot_labels(frame: pd.DataFrame, csv: Path) -> pd.Series:
    """Canonical label per row of a one-hot frame; every row must have exactly one 1."""
    columns = [c for c in frame.columns if c != "image"]
    codes = {}
    for column in columns:
        try:
            codes[column] = canonical(column)
        except ValueError as exc:
            raise DataError(f"{csv}: label column {column!r}: {exc}") from exc
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any().any():
        rows, cols = bad.to_numpy().nonzero()
        row, column = rows[0], cols[0]
        raise DataError(
            f"{csv}: image {frame['image'].iloc[row]}: column {columns[column]} is "
            f"{frame[columns[column]].iloc[row]!r}; expected 0 or 1"
        )
    ones = (values == 1).sum(axis=1)
    wrong = ones[ones != 1]
    if len(wrong):
        row = wrong.index[0]
        raise DataError(
            f"{csv}: image {frame['image'].loc[row]}: one-hot row has {wrong.iloc[0]} ones; "
            f"expected exactly one 1 among {columns} ({len(wrong)} such rows)"
        )
    return values.idxmax(axis=1).map(codes)


def read_metadata(root: Path) -> dict[str, dict]:
    """image id -> metadata record, or {} when the metadata CSV is absent."""
    path = root / METADATA
    if not path.is_file():
        return {}
    frame = read_csv(path, ("image",))
    keys = frame["image"].astype(str).map(image_key)
    dupes = keys[keys.duplicated()].unique()
    if len(dupes):
        raise DataError(f"{path}: duplicate image id(s) {list(dupes[:5])}")
    return dict(zip(keys, frame.to_dict("records")))


def load_isic2019(root: str | Path) -> Dataset:
    """Load ISIC 2019 as a canonical table (AK -> akiec; anatomic sites -> records.SITES)."""
    root = Path(root)
    csv = root / GROUND_TRUTH
    if not csv.is_file():
        raise DataError(f"{root}: no {GROUND_TRUTH} found")
    frame = read_csv(csv, ("image", *LABEL_COLUMNS))
    frame["image"] = frame["image"].astype(str).map(image_key)
    dupes = frame["image"][frame["image"].duplicated()].unique()
    if len(dupes):
        raise DataError(f"{csv}: duplicate image id(s) {list(dupes[:5])}")
    labels = dict(zip(frame["image"], one_hot_labels(frame, csv)))
    metadata = read_metadata(root)
    images: dict[str, Path] = {}
    for stem, path in index_images(root, IMAGE_DIRS).items():
        images.setdefault(image_key(stem), path)
    rows, problems = [], []
    for image_id, label in labels.items():
        path = images.get(image_id)
        if path is None:
            problems.append(f"{LABEL_WITHOUT_IMAGE}{image_id}")
            continue
        meta = metadata.get(image_id, {})
        rows.append(
            {
                "image_id": image_id,
                "path": str(path),
                "label": label,
                "lesion_id": _text(meta.get("lesion_id")),
                "patient_id": None,
                "age": normalise_age(meta.get("age_approx")),
                "sex": normalise_sex(meta.get("sex")),
                "site": normalise_isic_site(meta.get("anatom_site_general")),
                "source": "isic2019",
            }
        )
    problems += [f"{IMAGE_WITHOUT_LABEL}{p.name}" for k, p in images.items() if k not in labels]
    return Dataset(make_table(rows), root, "isic2019", problems)
