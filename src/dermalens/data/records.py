"""The one table every loader returns: a row per image with its canonical label and groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# Columns of a dataset table. `group` is what splits keep together: the patient when
# known, else the lesion, else a near-duplicate cluster, else the image itself.
COLUMNS = [
    "image_id",
    "path",
    "label",
    "lesion_id",
    "patient_id",
    "age",
    "sex",
    "site",
    "source",
]

# Prefixes of Dataset.problems entries: the loaders write them, `data check` sorts by them.
LABEL_WITHOUT_IMAGE = "label without image: "
IMAGE_WITHOUT_LABEL = "image without label: "
UNREADABLE = "unreadable image: "
# Followed by "exact copies: " or "near copies: " and a JSON list of the image_ids dropped.
CONFLICTING_LABELS = "conflicting labels, "

SEXES = ("male", "female")
SITES = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "head/neck",
    "lower extremity",
    "neck",
    "oral/genital",
    "palms/soles",
    "scalp",
    "trunk",
    "upper extremity",
)


class DataError(ValueError):
    """A dataset that cannot be read as asked; the message names the file and the problem."""


@dataclass
class Dataset:
    """Images with canonical labels, as a pandas table (see COLUMNS), plus load problems."""

    table: pd.DataFrame
    root: Path
    source: str
    problems: list[str]

    def __len__(self) -> int:
        return len(self.table)

    @property
    def classes(self) -> list[str]:
        return sorted(self.table["label"].unique())

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.table["label"].value_counts().sort_index().items()}

    def subset(self, classes: list[str] | tuple[str, ...]) -> Dataset:
        """Keep only rows whose label is in `classes` (a class subset for 4/5/7-class models)."""
        unknown = sorted(set(classes) - set(self.table["label"]))
        if unknown:
            raise DataError(f"classes {unknown} do not occur in {self.root}")
        keep = self.table["label"].isin(classes)
        return Dataset(self.table[keep].reset_index(drop=True), self.root, self.source, [])

    def without(self, image_ids: set[str]) -> Dataset:
        keep = ~self.table["image_id"].isin(image_ids)
        return Dataset(self.table[keep].reset_index(drop=True), self.root, self.source, [])


def normalise_sex(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if value in SEXES else None


def normalise_site(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower().replace("_", " ")
    return value if value in SITES else None


def normalise_age(value: object) -> float | None:
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return age if 0 <= age <= 120 else None


def make_table(rows: list[dict], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The COLUMNS table of `rows`, plus a source's own `extra` columns (e.g. PAD-UFES-20's
    clinical fields) after them; the rest of the library reads only COLUMNS."""
    table = pd.DataFrame(rows, columns=[*COLUMNS, *extra])
    table["age"] = table["age"].astype(float)
    return table


def group_ids(table: pd.DataFrame) -> pd.Series:
    """The id that must not cross splits: patient, else lesion, else image."""
    group = table["patient_id"].where(table["patient_id"].notna(), table["lesion_id"])
    return group.where(group.notna(), table["image_id"]).astype(str)
