"""Patient metadata (age, sex, body site) as a fixed-length vector; any field may be missing.

Each field carries an explicit "missing" indicator, so a model trained with random field
drop-out answers sensibly when a clinic leaves a field empty.
"""

from __future__ import annotations

import math

import numpy as np

from dermalens.data.records import SEXES, SITES

FIELDS = ("age", "sex", "site")


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


def withheld_fields(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Field names to feed as missing, checked: "age,site" or ["age", "site"] -> ("age",
    "site") in `FIELDS` order; an unknown name raises ValueError naming it."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names]
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise ValueError(f"unknown metadata field(s) {unknown}: choose from {list(FIELDS)}")
    return tuple(f for f in FIELDS if f in names)


def validate(age: float | None, sex: str | None, site: str | None) -> None:
    """Raise ValueError naming the field when a given value is out of range or unknown."""
    if age is not None and not 0 <= age <= 120:
        raise ValueError(f"age: {age} is out of range 0-120")
    if sex is not None and sex not in SEXES:
        raise ValueError(f"sex: {sex!r} is not one of {list(SEXES)}")
    if site is not None and site not in SITES:
        raise ValueError(f"site: {site!r} is not one of {list(SITES)}")
