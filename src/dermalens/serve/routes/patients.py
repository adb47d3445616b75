"""Patients: pseudonymous records under the clinic's own id; deletion and the data export.

Every read and write needs a staff account and leaves an audit event.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError

from dermalens.serve import audit, patient_crud, uploads
from dermalens.serve.clinic_deps import AUTH_ERRORS, PatientRecordDep, conflict
from dermalens.serve.clinic_schemas import PatientExport, PatientIn, PatientOut, PatientUpdate
from dermalens.serve.deps import SessionDep, SettingsDep, StaffDep
from dermalens.serve.i18n import _

router = APIRouter(prefix="/patients", tags=["patients"], responses=AUTH_ERRORS)
NOT_FOUND = {404: {"description": "unknown patient id"}}
TAKEN = {409: {"description": "the clinic id is taken"}}


@router.post("", status_code=status.HTTP_201_CREATED, responses=TAKEN)
def create_patient(
    body: PatientIn, staff: StaffDep, session: SessionDep, request: Request, response: Response
) -> PatientOut:
    """Register a patient under the clinic's own pseudonymous id (no name needed)."""
    try:
        patient = patient_crud.add_patient(session, body)
        audit.record(session, staff, request, "patient", patient.id, patient.id)
    except patient_crud.Conflict as exc:
        raise conflict(exc) from None
    except IntegrityError:  # the same clinic id created at the same moment
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            _(patient_crud.PATIENT_EXISTS) % {"id": repr(body.clinic_id)},
        ) from None
    response.headers["Location"] = str(request.url_for("read_patient", patient_id=patient.id))
    return PatientOut.model_validate(patient)


@router.get("")
def list_patients(
    staff: StaffDep,
    session: SessionDep,
    request: Request,
    clinic_id: Annotated[str | None, Query(max_length=64, description="find one")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[PatientOut]:
    """Patients, oldest record first; `clinic_id` finds the one with that clinic id."""
    if clinic_id is not None:
        found = patient_crud.find_patient(session, clinic_id)
        patients = [found] if found else []
    else:
        patients = patient_crud.list_patients(session, offset, limit)
    one = patients[0].id if clinic_id is not None and patients else None
    audit.record(session, staff, request, "patient", one, action="read" if one else "list")
    return [PatientOut.model_validate(p) for p in patients]


@router.get("/{patient_id}", responses=NOT_FOUND)
def read_patient(
    patient: PatientRecordDep, staff: StaffDep, session: SessionDep, request: Request
) -> PatientOut:
    """One patient's record."""
    audit.record(session, staff, request, "patient", patient.id, patient.id)
    return PatientOut.model_validate(patient)


@router.patch("/{patient_id}", responses={**NOT_FOUND, **TAKEN})
def update_patient(
    body: PatientUpdate,
    patient: PatientRecordDep,
    staff: StaffDep,
    session: SessionDep,
    request: Request,
) -> PatientOut:
    """Change the fields given (clinic id, sex, birth year, note)."""
    try:
        patient_crud.update_patient(session, patient, body)
    except patient_crud.Conflict as exc:
        raise conflict(exc) from None
    audit.record(session, staff, request, "patient", patient.id, patient.id)
    return PatientOut.model_validate(patient)


@router.delete("/{patient_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_patient(
    patient: PatientRecordDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    """Delete a patient with their lesions, visits, predictions, feedback and kept images;
    the audit log keeps who did what when, without clinical data."""
    patient_id = patient.id
    files = patient_crud.delete_patient(session, patient)
    audit.record(session, staff, request, "patient", patient_id, patient_id)
    uploads.remove(settings.uploads_dir, files)  # after the commit: a failed one keeps them
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{patient_id}/export", responses=NOT_FOUND)
def export_patient(
    patient: PatientRecordDep, staff: StaffDep, session: SessionDep, request: Request
) -> PatientExport:
    """Everything stored about one patient, as JSON (a GDPR / LGPD access request)."""
    body = patient_crud.export(session, patient)
    audit.record(session, staff, request, "patient", patient.id, patient.id, action="export")
    return body
