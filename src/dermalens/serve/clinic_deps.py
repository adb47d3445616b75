"""Dependencies of the patient-record routes: the patient, lesion or visit named in the path,
each behind a staff account (401 / 403 first, then 404 naming the id)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status

from dermalens.serve import patient_crud
from dermalens.serve.deps import SessionDep, StaffDep
from dermalens.serve.i18n import N_, _
from dermalens.serve.tables import LesionRecord, PatientRecord, VisitRecord

AUTH_ERRORS = {
    401: {"description": "no credentials, an invalid token or an expired session"},
    403: {"description": "account disabled, or a cookie request without its CSRF token"},
}


MISSING = {
    "patient": N_("patient %(id)s not found"),
    "lesion": N_("lesion %(id)s not found"),
    "visit": N_("visit %(id)s not found"),
}


def _missing(what: str, record_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, _(MISSING[what]) % {"id": repr(record_id)})


def path_patient(patient_id: str, staff: StaffDep, session: SessionDep) -> PatientRecord:
    patient = session.get(PatientRecord, patient_id)
    if patient is None:
        raise _missing("patient", patient_id)
    return patient


PatientRecordDep = Annotated[PatientRecord, Depends(path_patient)]


def path_lesion(lesion_id: str, patient: PatientRecordDep, session: SessionDep) -> LesionRecord:
    lesion = patient_crud.child(session, LesionRecord, lesion_id, patient.id)
    if lesion is None:
        raise _missing("lesion", lesion_id)
    return lesion


def path_visit(visit_id: str, patient: PatientRecordDep, session: SessionDep) -> VisitRecord:
    visit = patient_crud.child(session, VisitRecord, visit_id, patient.id)
    if visit is None:
        raise _missing("visit", visit_id)
    return visit


LesionDep = Annotated[LesionRecord, Depends(path_lesion)]
VisitDep = Annotated[VisitRecord, Depends(path_visit)]


def conflict(exc: patient_crud.Conflict) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


def image_url(patient_id: str, lesion_id: str, prediction_id: str) -> str:
    return f"/api/v1/patients/{patient_id}/lesions/{lesion_id}/predictions/{prediction_id}/image"
