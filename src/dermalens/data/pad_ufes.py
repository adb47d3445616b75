"""PAD-UFES-20: smartphone close-ups, a 26-column `metadata.csv` and PNGs in `images/`.

    dermalens data check DATA    # load_dataset tells it from HAM10000 by its columns

Pacheco et al., Data in Brief 32, 106221 (2020), CC BY 4.0. The table's `patient_id` is
the CSV's, so splits keep each patient's images together. The CSV's `lesion_id` repeats
across patients (lesion 86 is PAT_56's SCC and PAT_1014's ACK), so the table's lesion_id
is "<patient_id>_<lesion_id>".

Besides records.COLUMNS (gender -> sex, region -> site) the table keeps the clinical
fields as extra columns (CLINICAL), named as in the CSV: yes/no fields as 1.0 / 0.0,
`fitspatrick` (Fitzpatrick type 1-6) and the diameters (mm) as floats, the rest as text;
NaN where the CSV is blank, says "UNK", or holds a value out of range.
"""

from __future__ import annotations

from collections import Counter
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
)

CSV_NAME = "metadata.csv"
REQUIRED = ("patient_id", "lesion_id", "img_id", "diagnostic")
# `images/` here; the original download splits them over imgs_part_1..3.
IMAGE_DIRS = ("images", "imgs_part_1", "imgs_part_2", "imgs_part_3", ".")
SOURCE = "pad_ufes20"

# Actinic keratosis. PAD's SCC includes Bowen's disease, so its ACK is actinic keratosis
# alone, narrower than HAM10000's akiec (which holds Bowen's too): the taxonomy's own "ack".
ACK_CODE = "ack"
DIAGNOSES = {
    "ACK": ACK_CODE,
    "BCC": "bcc",
    "MEL": "mel",
    "NEV": "nv",
    "SCC": "scc",
    "SEK": "bkl",  # seborrheic keratosis: HAM10000's benign keratosis-like class
}

# Every PAD region, onto records.SITES (HAM10000's vocabulary, which has no nose or lip).
REGIONS = {
    "ABDOMEN": "abdomen",
    "ARM": "upper extremity",
    "BACK": "back",
    "CHEST": "chest",
    "EAR": "ear",
    "FACE": "face",
    "FOOT": "foot",
    "FOREARM": "upper extremity",
    "HAND": "hand",
    "LIP": "face",
    "NECK": "neck",
    "NOSE": "face",
    "SCALP": "scalp",
    "THIGH": "lower extremity",
}

YES_NO = (
    "smoke",
    "drink",
    "pesticide",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
    "biopsed",
)
NUMBERS = {"fitspatrick": (1.0, 6.0), "diameter_1": (0.0, 1000.0), "diameter_2": (0.0, 1000.0)}
# Every CSV column not read into records.COLUMNS, in the CSV's order.
CLINICAL = (
    "smoke",
    "drink",
    "background_father",
    "background_mother",
    "pesticide",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "fitspatrick",
    "region",
    "diameter_1",
    "diameter_2",
    "diagnostic",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
    "biopsed",
)
MISSING = ("", "UNK")
SPELLINGS = {"BRASIL": "BRAZIL"}  # background_* holds both


def _id(value: object) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _text(value: object) -> str | None:
    """Stripped, upper-case text; None for blank, NaN or UNK."""
    if not isinstance(value, str) or value.strip().upper() in MISSING:
        return None
    return value.strip().upper()


class _Reader:
    """Reads the clinical fields of CSV rows; counts each odd value it reads as missing."""

    def __init__(self) -> None:
        self.odd: Counter[tuple[str, str]] = Counter()

    def yes_no(self, column: str, value: object) -> float:
        text = _text(value)
        if text in ("TRUE", "FALSE"):
            return float(text == "TRUE")
        if text is not None:
            self.odd[column, str(value)] += 1
        return float("nan")

    def number(self, column: str, value: object) -> float:
        low, high = NUMBERS[column]
        text = _text(value)
        if text is None:
            return float("nan")
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if low <= number <= high:
            return number
        self.odd[column, str(value)] += 1
        return float("nan")

    def site(self, value: object) -> str | None:
        text = _text(value)
        if text is not None and text not in REGIONS:
            self.odd["region", str(value)] += 1
        return REGIONS.get(text or "")

    def clinical(self, rec: dict) -> dict:
        fields: dict[str, object] = {}
        for column in CLINICAL:
            value = rec.get(column)
            if column in YES_NO:
                fields[column] = self.yes_no(column, value)
            elif column in NUMBERS:
                fields[column] = self.number(column, value)
            else:
                text = _text(value)
                fields[column] = SPELLINGS.get(text, text) if text else float("nan")
        return fields

    def problems(self) -> list[str]:
        return [
            f"{column} {value!r} in {n} row(s): read as missing"
            + (" (no records.SITES match)" if column == "region" else "")
            for (column, value), n in sorted(self.odd.items())
        ]


def label_of(diagnostic: object, image_id: str, csv: Path) -> str:
    code = DIAGNOSES.get(_text(diagnostic) or "")
    if code is None:
        raise DataError(
            f"{csv}: image {image_id}: unknown diagnostic {diagnostic!r}; "
            f"expected one of {sorted(DIAGNOSES)}"
        )
    return code


def load_pad_ufes(root: str | Path) -> Dataset:
    """Load PAD-UFES-20 as a canonical table plus its clinical fields (see the docstring)."""
    root = Path(root)
    csv = root / CSV_NAME
    if not csv.is_file():
        raise DataError(f"{root}: no {CSV_NAME} found")
    frame = read_csv(csv, REQUIRED)
    frame["img_id"] = frame["img_id"].astype(str).str.strip()
    keys = frame["img_id"].map(lambda name: Path(name).stem)
    dupes = keys[keys.duplicated()].unique()
    if len(dupes):
        raise DataError(f"{csv}: duplicate img_id(s) {list(dupes[:5])}")
    images = index_images(root, IMAGE_DIRS)
    reader, rows, problems = _Reader(), [], []
    for image_id, rec in zip(keys, frame.to_dict("records")):
        label = label_of(rec["diagnostic"], image_id, csv)
        path = images.get(image_id)
        if path is None:
            problems.append(f"{LABEL_WITHOUT_IMAGE}{image_id}")
            continue
        patient, lesion = _id(rec["patient_id"]), _id(rec["lesion_id"])
        rows.append(
            {
                "image_id": image_id,
                "path": str(path),
                "label": label,
                "lesion_id": f"{patient}_{lesion}" if patient and lesion else lesion,
                "patient_id": patient,
                "age": normalise_age(rec.get("age")),
                "sex": normalise_sex(rec.get("gender")),
                "site": reader.site(rec.get("region")),
                "source": SOURCE,
                **reader.clinical(rec),
            }
        )
    known = set(keys)
    problems += [f"{IMAGE_WITHOUT_LABEL}{p.name}" for s, p in images.items() if s not in known]
    return Dataset(make_table(rows, CLINICAL), root, SOURCE, problems + reader.problems())


def biopsied(table: pd.DataFrame) -> pd.DataFrame:
    """The rows whose diagnosis was confirmed by biopsy (`biopsed` 1.0): PAD-UFES-20's
    non-biopsied diagnoses (most ACK, NEV and SEK) rest on a clinical consensus."""
    if "biopsed" not in table.columns:
        raise DataError("the table has no 'biopsed' column: only PAD-UFES-20 records biopsies")
    return table[table["biopsed"] == 1.0]
