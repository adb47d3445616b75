"""Database reads and writes of patient records: patients, lesions, visits, predictions filed
under a lesion at a visit, deletion with everything that hangs off a patient, and the export.

Functions flush but do not commit: the route commits together with its audit event.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dermalens.serve.clinic_schemas import (
    LesionOut,
    LesionPrediction,
    PatientExport,
    PatientOut,
    VisitOut,
)
from dermalens.serve.i18n import N_, _
from dermalens.serve.schemas import FeedbackOut, PredictionOut
from dermalens.serve.tables import (
    FeedbackRecord,
    LesionRecord,
    PatientRecord,
    PredictionRecord,
    VisitRecord,
)


class Conflict(ValueError):
    """The change clashes with what is stored (a taken clinic id, a visit of another patient)."""


PATIENT_EXISTS = N_("a patient with clinic_id %(id)s already exists")


def new_id() -> str:
    return uuid.uuid4().hex


def _apply(record: object, body: BaseModel) -> None:
    for key, value in body.model_dump(exclude_unset=True).items():
        setattr(record, key, value)


def find_patient(session: Session, clinic_id: str) -> PatientRecord | None:
    return session.scalar(select(PatientRecord).where(PatientRecord.clinic_id == clinic_id))


def add_patient(session: Session, body: BaseModel) -> PatientRecord:
    values = body.model_dump()
    if find_patient(session, values["clinic_id"]) is not None:
        raise Conflict(_(PATIENT_EXISTS) % {"id": repr(values["clinic_id"])})
    patient = PatientRecord(id=new_id(), **values)
    session.add(patient)
    session.flush()
    return patient


def update_patient(session: Session, patient: PatientRecord, body: BaseModel) -> PatientRecord:
    clinic_id = getattr(body, "clinic_id", None)
    if clinic_id and clinic_id != patient.clinic_id and find_patient(session, clinic_id):
        raise Conflict(_(PATIENT_EXISTS) % {"id": repr(clinic_id)})
    if "clinic_id" in body.model_fields_set and clinic_id is None:
        body = body.model_copy(update={"clinic_id": patient.clinic_id})
    _apply(patient, body)
    session.flush()
    return patient


def list_patients(session: Session, offset: int = 0, limit: int = 100) -> list[PatientRecord]:
    query = select(PatientRecord).order_by(PatientRecord.created_at, PatientRecord.id)
    return list(session.scalars(query.offset(offset).limit(limit)))


def add_lesion(session: Session, patient: PatientRecord, body: BaseModel) -> LesionRecord:
    lesion = LesionRecord(id=new_id(), patient_id=patient.id, **body.model_dump())
    session.add(lesion)
    session.flush()
    return lesion


def add_visit(session: Session, patient: PatientRecord, body: BaseModel) -> VisitRecord:
    visit = VisitRecord(id=new_id(), patient_id=patient.id, **body.model_dump())
    session.add(visit)
    session.flush()
    return visit


def update(session: Session, record: object, body: BaseModel) -> None:
    """Set the fields the body names (a lesion's or a visit's)."""
    _apply(record, body)
    session.flush()


def lesions_of(session: Session, patient_id: str) -> list[LesionRecord]:
    query = select(LesionRecord).where(LesionRecord.patient_id == patient_id)
    return list(session.scalars(query.order_by(LesionRecord.created_at, LesionRecord.id)))


def visits_of(session: Session, patient_id: str) -> list[VisitRecord]:
    query = select(VisitRecord).where(VisitRecord.patient_id == patient_id)
    return list(session.scalars(query.order_by(VisitRecord.date, VisitRecord.created_at)))


def child(session: Session, table: type, record_id: str, patient_id: str):
    """A lesion or visit by id, only if it belongs to the patient (else None)."""
    record = session.get(table, record_id)
    return record if record is not None and record.patient_id == patient_id else None


def patient_of_lesion(session: Session, lesion_id: str) -> str | None:
    lesion = session.get(LesionRecord, lesion_id)
    return lesion.patient_id if lesion else None


def visit_of(session: Session, lesion: LesionRecord, visit_id: str) -> VisitRecord:
    visit = child(session, VisitRecord, visit_id, lesion.patient_id)
    if visit is None:
        raise Conflict(_("visit %(id)s is not a visit of this patient") % {"id": repr(visit_id)})
    return visit


def attach(
    session: Session, prediction: PredictionRecord, lesion: LesionRecord, visit: VisitRecord
) -> None:
    """File a prediction under a lesion at a visit (the same patient's); refiling is allowed."""
    if prediction.lesion_id is not None and prediction.lesion_id != lesion.id:
        raise Conflict(
            _("prediction %(id)s is filed under another lesion") % {"id": repr(prediction.id)}
        )
    prediction.lesion_id, prediction.visit_id = lesion.id, visit.id
    session.flush()


def _timeline(session: Session, where) -> list[tuple[PredictionRecord, VisitRecord]]:
    query = (
        select(PredictionRecord, VisitRecord)
        .join(VisitRecord, PredictionRecord.visit_id == VisitRecord.id)
        .where(where)
        .order_by(VisitRecord.date, PredictionRecord.created_at, PredictionRecord.id)
    )
    return [(p, v) for p, v in session.execute(query)]


def filed(prediction: PredictionRecord, visit: VisitRecord, image_url: str | None):
    return LesionPrediction(
        prediction_id=prediction.id,
        lesion_id=prediction.lesion_id,
        visit_id=visit.id,
        visit_date=visit.date,
        image_url=image_url if prediction.image_file else None,
        prediction=PredictionOut.model_validate(prediction.result),
    )


def lesion_timeline(session: Session, lesion_id: str):
    """(prediction, visit) pairs of one lesion, oldest visit first."""
    return _timeline(session, PredictionRecord.lesion_id == lesion_id)


def visit_timeline(session: Session, visit_id: str):
    return _timeline(session, PredictionRecord.visit_id == visit_id)


def _predictions_of(session: Session, patient_id: str) -> list[PredictionRecord]:
    lesions = select(LesionRecord.id).where(LesionRecord.patient_id == patient_id)
    visits = select(VisitRecord.id).where(VisitRecord.patient_id == patient_id)
    query = select(PredictionRecord).where(
        PredictionRecord.lesion_id.in_(lesions) | PredictionRecord.visit_id.in_(visits)
    )
    return list(session.scalars(query.order_by(PredictionRecord.created_at)))


def delete_predictions(session: Session, predictions: list[PredictionRecord]) -> list[str]:
    """Delete predictions with their feedback; returns the kept image files to remove."""
    ids = [p.id for p in predictions]
    files = [p.image_file for p in predictions if p.image_file]
    if ids:
        session.execute(delete(FeedbackRecord).where(FeedbackRecord.prediction_id.in_(ids)))
        session.execute(delete(PredictionRecord).where(PredictionRecord.id.in_(ids)))
    return files


def delete_lesion(session: Session, lesion: LesionRecord) -> list[str]:
    query = select(PredictionRecord).where(PredictionRecord.lesion_id == lesion.id)
    files = delete_predictions(session, list(session.scalars(query)))
    session.delete(lesion)
    session.flush()
    return files


def delete_visit(session: Session, visit: VisitRecord) -> list[str]:
    query = select(PredictionRecord).where(PredictionRecord.visit_id == visit.id)
    files = delete_predictions(session, list(session.scalars(query)))
    session.delete(visit)
    session.flush()
    return files


def delete_patient(session: Session, patient: PatientRecord) -> list[str]:
    """Delete a patient with their lesions, visits, predictions and feedback (not the audit
    log); returns the image files to remove once the deletion is committed."""
    files = delete_predictions(session, _predictions_of(session, patient.id))
    session.execute(delete(LesionRecord).where(LesionRecord.patient_id == patient.id))
    session.execute(delete(VisitRecord).where(VisitRecord.patient_id == patient.id))
    session.delete(patient)
    session.flush()
    return files


def export(session: Session, patient: PatientRecord) -> PatientExport:
    """Everything stored about a patient, as the data-protection export."""
    predictions = _predictions_of(session, patient.id)
    ids = [p.id for p in predictions]
    feedback = session.scalars(
        select(FeedbackRecord)
        .where(FeedbackRecord.prediction_id.in_(ids))
        .order_by(FeedbackRecord.id)
    )
    rows = [
        {
            "id": p.id,
            "lesion_id": p.lesion_id,
            "visit_id": p.visit_id,
            "image_kept": bool(p.image_file),
            "result": p.result,
        }
        for p in predictions
    ]
    return PatientExport(
        exported_at=datetime.now(UTC),
        patient=PatientOut.model_validate(patient),
        lesions=[LesionOut.model_validate(x) for x in lesions_of(session, patient.id)],
        visits=[VisitOut.model_validate(x) for x in visits_of(session, patient.id)],
        predictions=rows,
        feedback=[FeedbackOut.model_validate(f) for f in feedback],
    )
