"""SNOMED CT and ICD-11 codes for every taxonomy class, kept in one place.

Each class has, per code system, either a `Code` (concept id or code, the preferred term or
title, where it was checked, and how well) or a `NoCode` that says why there is none. FHIR
output (`serve.fhir_export`) and the PDF report read only this table.

How well each code was checked (`Code.check`):
- "browser": seen on a terminology browser or mirror page (tx.fhir.org's SNOMED CT pages,
  the CISMeF / WHO ICD-11 pages); the URL is in `source`.
- "corroborated": the same id with the same term in two or more independent public sources
  (named in `source`), not on a terminology browser in this session.
- "unverified": recalled, or found in one source only. Kept here so a reviewer can check it,
  but never emitted: `emitted()` leaves it out, so no unchecked code reaches a health record.
Before clinical use, check every code against the edition your system runs (a national
SNOMED CT edition, the ICD-11 MMS release your country uses) with a terminology server.

Licences. SNOMED CT is © SNOMED International (formerly IHTSDO). Using it in a system needs
the SNOMED International Affiliate Licence: free of charge in member countries (through the
national release centre), fees by World Bank income band elsewhere. dermalens ships only
concept ids and preferred terms, no release files; the deployer's licence covers their use.
ICD-11 is © WHO, licensed CC BY-ND 3.0 IGO.

Sources:
- SNOMED CT International browser: https://browser.ihtsdotools.org/ (International Edition)
- tx.fhir.org SNOMED CT pages (FHIR terminology server, HL7)
- ICD-11 MMS browser, release 2024-01: https://icd.who.int/browse/2024-01/mms/en
"""

from __future__ import annotations

from dataclasses import dataclass

from dermalens import taxonomy

SNOMED = "http://snomed.info/sct"
ICD11 = "http://id.who.int/icd/release/11/mms"
ICD11_RELEASE = "2024-01"
EMITTED_CHECKS = ("browser", "corroborated")


@dataclass(frozen=True)
class Code:
    system: str  # SNOMED or ICD11
    code: str
    display: str  # SNOMED CT preferred term (en-US) or the ICD-11 title
    source: str  # where it was checked
    check: str  # "browser", "corroborated" or "unverified" (see the module docstring)


@dataclass(frozen=True)
class NoCode:
    reason: str


@dataclass(frozen=True)
class ClassCodes:
    snomed: Code | NoCode
    icd11: Code | NoCode


def _sct(code: str, term: str, source: str, check: str) -> Code:
    return Code(SNOMED, code, term, source, check)


def _icd(code: str, title: str, source: str, check: str) -> Code:
    return Code(ICD11, code, title, source, check)


_TX = "https://tx.fhir.org/snomed/"  # the page for a concept: ?id=<concept id>&type=snomed
_ICD = f"https://icd.who.int/browse/{ICD11_RELEASE}/mms/en"
GROUP = "a group of several diagnoses with no single concept that covers only them"

AK_SCT = _sct(
    "201101007",
    "Actinic keratosis",
    "GitHub mayodtit/RHSMocker db/seeds/conditions.rb (with its description ids) and a "
    "SNOMED-coded skin-cancer picklist checked against Ontoserver",
    "corroborated",
)
AK_ICD = _icd(
    "EK90.0",
    "Actinic keratosis",
    f"{_ICD} (block EK90); three independent public EHR / app sources give EK90.0",
    "corroborated",
)

CODES: dict[str, ClassCodes] = {
    # HAM10000's akiec holds actinic keratoses and intraepithelial carcinoma (Bowen's
    # disease); coded as its large majority, actinic keratosis. The class name says both.
    "akiec": ClassCodes(AK_SCT, AK_ICD),
    "ack": ClassCodes(AK_SCT, AK_ICD),  # PAD-UFES-20's actinic keratosis, alone
    "bcc": ClassCodes(
        _sct(
            "254701007",
            "Basal cell carcinoma of skin",
            f"{_TX}?id=716274007 (its parent); MONDO:0005341 cross-reference "
            "http://identifiers.org/snomedct/254701007",
            "browser",
        ),
        _icd(
            "2C32",
            "Basal cell carcinoma of skin",
            f"{_ICD}#1203447657; CISMeF ICD11_CA_1203447657",
            "browser",
        ),
    ),
    "bkl": ClassCodes(
        NoCode(
            f"{GROUP}: seborrhoeic keratosis, solar lentigo and lichen planus-like "
            "keratosis (PAD-UFES-20's seborrhoeic keratosis is mapped here too)"
        ),
        NoCode(
            f"{GROUP}: 2F21.0 (seborrhoeic keratosis) covers one of its three diagnoses; "
            "solar lentigo and lichenoid keratosis sit elsewhere in ICD-11"
        ),
    ),
    "df": ClassCodes(
        NoCode("dermatofibroma: no concept id could be checked in this session"),
        _icd(
            "2F23.0",
            "Dermatofibroma",
            f"{_ICD}; one third-party page (coding.health) only",
            "unverified",
        ),
    ),
    "mel": ClassCodes(
        _sct(
            "93655004",
            "Malignant melanoma of skin",
            "several independent public code bases with this id and term (a SNOMED-coded "
            "skin-cancer picklist checked against the IHTSDO browser; a condition code list)",
            "corroborated",
        ),
        _icd(
            "2C30",
            "Melanoma of skin",
            f"{_ICD}; two independent public health-information sources",
            "corroborated",
        ),
    ),
    "nv": ClassCodes(
        _sct(
            "400096001",
            "Melanocytic nevus",
            f"{_TX}?id=400096001 (UK edition 2023-04-12 mirror; GB term 'Melanocytic naevus')",
            "browser",
        ),
        _icd("2F20", "Melanocytic naevus", f"{_ICD}; recalled, not found on a page", "unverified"),
    ),
    "vasc": ClassCodes(
        NoCode(f"{GROUP}: haemangiomas, angiokeratomas, pyogenic granulomas, haemorrhage"),
        NoCode(f"{GROUP}: haemangiomas, angiokeratomas, pyogenic granulomas, haemorrhage"),
    ),
    "scc": ClassCodes(
        _sct(
            "254651007",
            "Squamous cell carcinoma of skin",
            "two independent public code bases (a Databricks cohort notebook and a "
            "SNOMED-coded skin-cancer picklist)",
            "corroborated",
        ),
        _icd(
            "2C31",
            "Squamous cell carcinoma of skin",
            f"{_ICD}; recalled (next to 2C30 / 2C32); public pages disagree",
            "unverified",
        ),
    ),
    "unk": ClassCodes(
        NoCode("'other / unknown' is not a diagnosis"),
        NoCode("'other / unknown' is not a diagnosis"),
    ),
}

# DermNet NZ's 23 Kaggle groups: each mixes several diagnoses (e.g. "herpes, HPV and other
# STDs"), and no bundled model uses them; an explicit no-code each.
DERMNET_GROUPS = (
    "acne_rosacea", "bullous", "cellulitis", "eczema", "exanthems", "hair_loss", "herpes_hpv",
    "pigmentation", "lupus", "melanoma_nevi", "nail_fungus", "poison_ivy", "psoriasis",
    "scabies", "seborrheic_keratoses", "systemic", "tinea", "urticaria", "vascular_tumors",
    "vasculitis", "warts", "actinic_keratosis_bcc",
)  # fmt: skip
for _code in DERMNET_GROUPS:
    _why = NoCode(f"a DermNet NZ image group ({taxonomy.display_name(_code)}): {GROUP}")
    CODES[_code] = ClassCodes(_why, _why)

OPEN_CLASS = ClassCodes(
    NoCode("an open class read from a folder name; nobody has coded it"),
    NoCode("an open class read from a folder name; nobody has coded it"),
)


def codes_for(class_code: str) -> ClassCodes:
    """Both entries for a class; open and unknown classes get an explicit no-code."""
    return CODES.get(class_code, OPEN_CLASS)


def emitted(class_code: str) -> list[Code]:
    """The codes fit to send to a health record: checked or corroborated ones only."""
    pair = codes_for(class_code)
    return [
        c for c in (pair.snomed, pair.icd11) if isinstance(c, Code) and c.check in EMITTED_CHECKS
    ]


def withheld(class_code: str) -> list[str]:
    """One line per code system without an emitted code, saying why (for reports)."""
    pair = codes_for(class_code)
    lines = []
    for name, entry in (("SNOMED CT", pair.snomed), ("ICD-11", pair.icd11)):
        if isinstance(entry, NoCode):
            lines.append(f"{name}: no code ({entry.reason})")
        elif entry.check not in EMITTED_CHECKS:
            lines.append(f"{name}: {entry.code} withheld (not verified: {entry.source})")
    return lines
