"""Request and response bodies of the patient records (patients, lesions, visits, a lesion's
predictions over time, the data export); field descriptions become the OpenAPI docs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from dermalens.data.records import SEXES, SITES
from dermalens.serve.i18n import N_, _
from dermalens.serve.lesion_change import VisitChange
from dermalens.serve.schemas import FeedbackOut, PredictionOut


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes; every time stored here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]
ClinicId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\s\x00-\x1f](.*[^\s\x00-\x1f])?$",
        description="the clinic's own pseudonymous reference (unique); never a name",
        examples=["PT-2026-0042"],
    ),
]
Note = Annotated[str | None, Field(max_length=2000, examples=["referred by GP"])]


# validators run inside the request, so `_` words them in its language
UNKNOWN = {
    "sex": N_("unknown sex %(value)s; use one of %(allowed)s"),
    "site": N_("unknown site %(value)s; use one of %(allowed)s"),
}


def _one_of(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    value = (value or "").strip().lower() or None
    if value is not None and value not in allowed:
        raise ValueError(_(UNKNOWN[what]) % {"value": repr(value), "allowed": list(allowed)})
    return value


class PatientFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sex: str | None = Field(None, description=f"one of {list(SEXES)}", examples=["female"])
    birth_year: int | None = Field(
        None, ge=1900, le=2100, description="gives the model an age at each visit"
    )
    note: Note = None

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str | None) -> str | None:
        return _one_of(value, SEXES, "sex")


class PatientIn(PatientFields):
    clinic_id: ClinicId


class PatientUpdate(PatientFields):
    clinic_id: ClinicId | None = None


class PatientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(
        description="random id used in URLs", examples=["3f1c9a0e5b7d4c2a8e6f1b0d9c8a7e6f"]
    )
    clinic_id: str
    sex: str | None
    birth_year: int | None
    note: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class LesionFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str | None = Field(None, description=f"one of {list(SITES)}", examples=["back"])

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        return _one_of(value, SITES, "site")


class LesionIn(LesionFields):
    label: str = Field(
        min_length=1, max_length=200, examples=["left shoulder, 3 cm below clavicle"]
    )


class LesionUpdate(LesionFields):
    label: str | None = Field(None, min_length=1, max_length=200)


class LesionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    patient_id: str
    site: str | None
    label: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class VisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: dt.date = Field(examples=["2026-12-03"])
    note: Note = None


class VisitUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: dt.date | None = None
    note: Note = None


class VisitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    patient_id: str
    date: dt.date
    note: str | None
    created_at: UtcDatetime


class AttachIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visit_id: str = Field(description="a visit of the same patient", max_length=32)


class LesionPrediction(BaseModel):
    """One image of a lesion at a visit, with the stored result."""

    prediction_id: str
    lesion_id: str
    visit_id: str
    visit_date: dt.date
    image_url: str | None = Field(description="the kept image (needs an account); null if none")
    prediction: PredictionOut


class LesionHistory(BaseModel):
    lesion: LesionOut
    predictions: list[LesionPrediction] = Field(description="oldest visit first")
    changes: list[VisitChange] = Field(
        default_factory=list,
        description="from each visit to the next (a visit's first prediction against the "
        "previous visit's last), oldest first; see runtime.change for what each part measures",
    )
    changed_since_last_visit: bool = Field(
        False, description="the latest visit's flag: the last entry of `changes`, if any"
    )


class VisitDetail(VisitOut):
    predictions: list[LesionPrediction]


class PatientExport(BaseModel):
    """Everything stored about one patient (GDPR art. 15 and 20, LGPD art. 18)."""

    exported_at: UtcDatetime
    patient: PatientOut
    lesions: list[LesionOut]
    visits: list[VisitOut]
    predictions: list[dict[str, Any]] = Field(
        description="each prediction's stored result with its lesion_id, visit_id and whether "
        "an image is kept (the images themselves: image_url, one request each)"
    )
    feedback: list[FeedbackOut]
