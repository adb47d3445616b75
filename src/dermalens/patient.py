"""Patient metadata (age, sex, body site, and optional clinical fields) as a fixed-length
vector; any field may be missing.

Each field carries an explicit "missing" indicator, so a model trained with random field
drop-out answers sensibly when a clinic leaves a field empty. A bundle's `metadata_fields`
says which fields its model takes: `FIELDS` (age, sex, site: the default model's, encoded
by `encode` as ever) and then any of `CLINICAL` (PAD-UFES-20's lesion history and
examination, each one value and one missing flag appended, in the bundle's order). Whether
a lesion was biopsied is a fact about the label, never an input: it is not a field.
"""

from __future__ import annotations

import math

import numpy as np

from dermalens.data.records import SEXES, SITES

FIELDS = ("age", "sex", "site")

# Clinical field -> (what it is, the table column PAD-UFES-20's loader fills, scale): a
# yes/no field is 1.0 / 0.0; numbers are divided by the scale (so about 0..1).
CLINICAL: dict[str, tuple[str, str, float]] = {
    "fitzpatrick": ("Fitzpatrick skin type, 1-6", "fitspatrick", 6.0),
    "itch": ("the lesion itches: yes/no", "itch", 1.0),
    "grew": ("the lesion grew: yes/no", "grew", 1.0),
    "hurt": ("the lesion hurts: yes/no", "hurt", 1.0),
    "changed": ("the lesion changed: yes/no", "changed", 1.0),
    "bleed": ("the lesion bleeds: yes/no", "bleed", 1.0),
    "elevation": ("the lesion is raised: yes/no", "elevation", 1.0),
    "diameter_1": ("larger diameter in mm, 0-1000", "diameter_1", 20.0),
    "diameter_2": ("smaller diameter in mm, 0-1000", "diameter_2", 20.0),
}
RANGES = {"fitzpatrick": (1.0, 6.0), "diameter_1": (0.0, 1000.0), "diameter_2": (0.0, 1000.0)}
ALL_FIELDS = FIELDS + tuple(CLINICAL)


DIM = 2 + len(SEXES) + 1 + len(SITES) + 1


def encode(age: float | None = None, sex: str | None = None, site: str | None = None) -> np.ndarray:
    """Encode one patient's metadata; None (or NaN) means missing."""
    vec = np.zeros(DIM, dtype=np.float32)
    if age is None or (isinstance(age, float) and math.isnan(age)):
        vec[1] = 1.0
    else:
        vec[0] = float(age) / 100.0
    offset = 2
    if sex in SEXES:
        vec[offset + SEXES.index(sex)] = 1.0
    else:
        vec[offset + len(SEXES)] = 1.0
    offset += len(SEXES) + 1
    if site in SITES:
        vec[offset + SITES.index(site)] = 1.0
    else:
        vec[offset + len(SITES)] = 1.0
    return vec


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_fields(fields: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A model's metadata fields, checked: `FIELDS` first, then clinical ones, once each."""
    fields = tuple(fields)
    extra = fields[len(FIELDS) :]
    if fields and (fields[: len(FIELDS)] != FIELDS or len(set(extra)) != len(extra)):
        raise ValueError(f"metadata fields {list(fields)} must start with {list(FIELDS)}")
    unknown = [f for f in extra if f not in CLINICAL]
    if unknown:
        raise ValueError(f"unknown metadata field(s) {unknown}: choose from {list(CLINICAL)}")
    return fields


def dim(fields: list[str] | tuple[str, ...]) -> int:
    """Length of the vector `encode_fields` makes for these fields (0: no metadata)."""
    return DIM + 2 * (len(fields) - len(FIELDS)) if fields else 0


def encode_fields(fields: list[str] | tuple[str, ...], values: dict | None = None) -> np.ndarray:
    """Encode the named fields from `values` (field -> value; absent, None or NaN: missing).

    With `FIELDS` only this is `encode(age, sex, site)`; each clinical field appends
    (value / scale, 0) or (0, 1) when missing."""
    values = values or {}
    base = encode(values.get("age"), values.get("sex"), values.get("site"))
    extra = np.zeros(2 * (len(fields) - len(FIELDS)), dtype=np.float32)
    for i, name in enumerate(fields[len(FIELDS) :]):
        value = values.get(name)
        if _missing(value):
            extra[2 * i + 1] = 1.0
        else:
            extra[2 * i] = float(value) / CLINICAL[name][2]
    return np.concatenate([base, extra])


def row_values(row: object, fields: list[str] | tuple[str, ...]) -> dict:
    """A dataset table row's (mapping or named tuple) values of the fields; a column the
    table lacks (a HAM10000 table has no clinical columns) reads as missing."""
    # a dict or pandas row has .get; a named tuple (itertuples) has attributes
    get = row.get if hasattr(row, "get") else (lambda c, d=None: getattr(row, c, d))
    out = {}
    for name in fields:
        value = get(CLINICAL[name][1] if name in CLINICAL else name, None)
        out[name] = None if _missing(value) else value
    return out


def withheld_fields(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Field names to feed as missing, checked: "age,site" or ["age", "site"] -> ("age",
    "site") in `ALL_FIELDS` order; an unknown name raises ValueError naming it."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names]
    unknown = [n for n in names if n not in ALL_FIELDS]
    if unknown:
        raise ValueError(f"unknown metadata field(s) {unknown}: choose from {list(ALL_FIELDS)}")
    return tuple(f for f in ALL_FIELDS if f in names)


def validate(age: float | None, sex: str | None, site: str | None) -> None:
    """Raise ValueError naming the field when a given value is out of range or unknown."""
    if age is not None and not 0 <= age <= 120:
        raise ValueError(f"age: {age} is out of range 0-120")
    if sex is not None and sex not in SEXES:
        raise ValueError(f"sex: {sex!r} is not one of {list(SEXES)}")
    if site is not None and site not in SITES:
        raise ValueError(f"site: {site!r} is not one of {list(SITES)}")


def validate_clinical(values: dict) -> dict:
    """Checked clinical fields: unknown names and out-of-range values raise ValueError
    naming the field; yes/no fields take True/False, 1/0 or "yes"/"no". None = missing."""
    unknown = sorted(set(values) - set(CLINICAL))
    if unknown:
        raise ValueError(f"unknown clinical field(s) {unknown}: choose from {list(CLINICAL)}")
    out: dict = {}
    for name, value in values.items():
        if _missing(value):
            out[name] = None
        elif name in RANGES:
            low, high = RANGES[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: {value!r} is not a number")
            if not low <= value <= high:
                raise ValueError(f"{name}: {value} is out of range {low:g}-{high:g}")
            out[name] = float(value)
        else:
            text = str(value).strip().lower()
            if text not in ("true", "false", "yes", "no", "1", "0", "1.0", "0.0"):
                raise ValueError(f"{name}: {value!r} is not yes/no")
            out[name] = float(text in ("true", "yes", "1", "1.0"))
    return out
