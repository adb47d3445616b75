"""Clinical metadata fields (issue 19): encoding with missing flags, checks, never `biopsed`.

pytest tests/test_clinical_fields.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermalens import patient
from dermalens.data.loaders import load_dataset

PAD = Path(__file__).parent / "fixtures" / "pad"
CLINICAL_MODEL = ("age", "sex", "site", *patient.CLINICAL)


def test_the_three_default_fields_encode_as_before() -> None:
    values = {"age": 55.0, "sex": "female", "site": "back"}
    np.testing.assert_array_equal(
        patient.encode_fields(patient.FIELDS, values), patient.encode(55.0, "female", "back")
    )
    assert patient.dim(patient.FIELDS) == patient.DIM and patient.dim(()) == 0


def test_each_clinical_field_has_a_value_and_a_missing_flag() -> None:
    vec = patient.encode_fields(CLINICAL_MODEL, {"itch": 1.0, "diameter_1": 10.0})
    assert len(vec) == patient.dim(CLINICAL_MODEL) == patient.DIM + 2 * len(patient.CLINICAL)
    extra = vec[patient.DIM :].reshape(-1, 2)
    names = list(patient.CLINICAL)
    assert list(extra[names.index("itch")]) == [1.0, 0.0]
    assert list(extra[names.index("diameter_1")]) == [0.5, 0.0]  # 10 mm / 20
    assert list(extra[names.index("bleed")]) == [0.0, 1.0]  # absent: missing
    # NaN (as the table holds a blank) is missing too
    nan = patient.encode_fields(CLINICAL_MODEL, {"itch": float("nan")})
    np.testing.assert_array_equal(nan, patient.encode_fields(CLINICAL_MODEL))


def test_biopsed_is_never_a_field() -> None:
    assert "biopsed" not in patient.ALL_FIELDS
    with pytest.raises(ValueError, match="biopsed"):
        patient.check_fields((*patient.FIELDS, "biopsed"))
    with pytest.raises(ValueError, match="biopsed"):
        patient.validate_clinical({"biopsed": "yes"})


def test_fields_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="must start with"):
        patient.check_fields(("itch",))
    with pytest.raises(ValueError, match="fitzpatrick: 9 is out of range 1-6"):
        patient.validate_clinical({"fitzpatrick": 9})
    with pytest.raises(ValueError, match="itch: 'sometimes' is not yes/no"):
        patient.validate_clinical({"itch": "sometimes"})
    assert patient.validate_clinical({"itch": "yes", "grew": False, "hurt": None}) == {
        "itch": 1.0,
        "grew": 0.0,
        "hurt": None,
    }


def test_table_rows_read_the_loader_columns() -> None:
    table = load_dataset(PAD).table
    row = table.iloc[0]
    values = patient.row_values(row, CLINICAL_MODEL)
    assert set(values) == set(CLINICAL_MODEL)
    assert values["fitzpatrick"] == (None if np.isnan(row["fitspatrick"]) else row["fitspatrick"])
    # a named tuple (evaluation's itertuples) reads the same; a HAM table lacks the columns
    same = patient.row_values(next(table.itertuples(index=False)), CLINICAL_MODEL)
    assert same == values
    assert patient.row_values({"age": 40.0}, CLINICAL_MODEL)["itch"] is None
