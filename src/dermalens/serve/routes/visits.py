"""A patient's visits (dates); the images taken at a visit are filed under lesions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from dermalens.serve import audit, patient_crud, uploads
from dermalens.serve.clinic_deps import AUTH_ERRORS, PatientRecordDep, VisitDep, image_url
from dermalens.serve.clinic_schemas import VisitDetail, VisitIn, VisitOut, VisitUpdate
from dermalens.serve.deps import SessionDep, SettingsDep, StaffDep

router = APIRouter(prefix="/patients/{patient_id}/visits", tags=["visits"], responses=AUTH_ERRORS)
NOT_FOUND = {404: {"description": "unknown patient or visit id"}}


@router.post("", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def create_visit(
    body: VisitIn, patient: PatientRecordDep, staff: StaffDep, session: SessionDep, request: Request
) -> VisitOut:
    """Record a visit of the patient on a date."""
    visit = patient_crud.add_visit(session, patient, body)
    audit.record(session, staff, request, "visit", patient.id, visit.id)
    return VisitOut.model_validate(visit)


@router.get("", responses=NOT_FOUND)
def list_visits(
    patient: PatientRecordDep, staff: StaffDep, session: SessionDep, request: Request
) -> list[VisitOut]:
    """The patient's visits, earliest first."""
    visits = patient_crud.visits_of(session, patient.id)
    audit.record(session, staff, request, "visit", patient.id, action="list")
    return [VisitOut.model_validate(v) for v in visits]


@router.get("/{visit_id}", responses=NOT_FOUND)
def read_visit(
    visit: VisitDep, staff: StaffDep, session: SessionDep, request: Request
) -> VisitDetail:
    """One visit with the predictions made at it."""
    filed = [
        patient_crud.filed(p, v, image_url(visit.patient_id, p.lesion_id, p.id))
        for p, v in patient_crud.visit_timeline(session, visit.id)
    ]
    audit.record(session, staff, request, "visit", visit.patient_id, visit.id)
    return VisitDetail(**VisitOut.model_validate(visit).model_dump(), predictions=filed)


@router.patch("/{visit_id}", responses=NOT_FOUND)
def update_visit(
    body: VisitUpdate, visit: VisitDep, staff: StaffDep, session: SessionDep, request: Request
) -> VisitOut:
    """Change a visit's date or note."""
    patient_crud.update(session, visit, body)
    audit.record(session, staff, request, "visit", visit.patient_id, visit.id)
    return VisitOut.model_validate(visit)


@router.delete("/{visit_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_visit(
    visit: VisitDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    """Delete a visit with the predictions, feedback and images filed at it."""
    patient_id, visit_id = visit.patient_id, visit.id
    files = patient_crud.delete_visit(session, visit)
    audit.record(session, staff, request, "visit", patient_id, visit_id)
    uploads.remove(settings.uploads_dir, files)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
