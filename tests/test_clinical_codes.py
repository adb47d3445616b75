"""SNOMED CT / ICD-11 codes: every class of every bundled model and of the taxonomy has both
codes or an explicit no-code with a reason, each code with a source.

nice -n 5 pytest tests/test_clinical_codes.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dermalens import clinical_codes, taxonomy
from dermalens.clinical_codes import Code, NoCode

BUNDLED = Path(clinical_codes.__file__).parent / "bundled"
CHECKS = ("browser", "corroborated", "unverified")


def bundled_classes() -> list[tuple[str, str]]:
    """(bundle, class code) for every bundle.json under bundled/, ensemble members too."""
    found = []
    for description in sorted(BUNDLED.rglob("bundle.json")):
        for entry in json.loads(description.read_text())["classes"]:
            found.append((str(description.parent.relative_to(BUNDLED)), entry["code"]))
    return found


def test_there_is_a_bundled_model():
    assert bundled_classes(), f"no bundle.json under {BUNDLED}"


@pytest.mark.parametrize(("bundle", "code"), bundled_classes())
def test_every_bundled_class_has_its_own_entry(bundle, code):
    assert code in clinical_codes.CODES, f"{bundle}: class {code!r} has no entry in CODES"


@pytest.mark.parametrize("code", sorted(taxonomy.CLASSES))
def test_every_taxonomy_class_has_both_or_an_explicit_no_code(code):
    pair = clinical_codes.codes_for(code)
    assert pair is not clinical_codes.OPEN_CLASS, f"{code!r} falls back to the open-class entry"
    for entry, system in ((pair.snomed, clinical_codes.SNOMED), (pair.icd11, clinical_codes.ICD11)):
        if isinstance(entry, NoCode):
            assert len(entry.reason) > 10, f"{code}: a no-code needs a reason"
            continue
        assert isinstance(entry, Code) and entry.system == system
        assert entry.display and entry.source and entry.check in CHECKS
        if system == clinical_codes.SNOMED:
            # a concept id: 6-18 digits, partition "00" (International core concept)
            assert re.fullmatch(r"\d{6,18}", entry.code) and entry.code[-3:-1] == "00"
        else:
            assert re.fullmatch(r"[0-9A-Z]{4}(\.[0-9A-Z]{1,2})?", entry.code), entry.code


def test_only_checked_codes_are_emitted_and_withheld_ones_say_why():
    for code in clinical_codes.CODES:
        assert all(c.check != "unverified" for c in clinical_codes.emitted(code))
    assert {c.code for c in clinical_codes.emitted("mel")} == {"93655004", "2C30"}
    assert any("withheld" in line for line in clinical_codes.withheld("scc"))
    assert all("no code" in line for line in clinical_codes.withheld("bkl"))


def test_an_open_class_gets_an_explicit_no_code():
    pair = clinical_codes.codes_for("acute_febrile_neutrophilic_dermatosis")
    assert isinstance(pair.snomed, NoCode) and isinstance(pair.icd11, NoCode)
    assert clinical_codes.emitted("acute_febrile_neutrophilic_dermatosis") == []
