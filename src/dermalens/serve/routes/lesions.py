"""A patient's lesions (body site and a free label) and each lesion's history over visits."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from dermalens.runtime.change import PRESETS
from dermalens.runtime.predictor import Predictor
from dermalens.serve import audit, patient_crud, uploads
from dermalens.serve.clinic_deps import AUTH_ERRORS, LesionDep, PatientRecordDep, image_url
from dermalens.serve.clinic_schemas import LesionHistory, LesionIn, LesionOut, LesionUpdate
from dermalens.serve.deps import PredictorDep, SessionDep, SettingsDep, StaffDep
from dermalens.serve.lesion_change import history_changes
from dermalens.serve.settings import Settings

router = APIRouter(prefix="/patients/{patient_id}/lesions", tags=["lesions"], responses=AUTH_ERRORS)
NOT_FOUND = {404: {"description": "unknown patient or lesion id"}}


@router.post("", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def create_lesion(
    body: LesionIn,
    patient: PatientRecordDep,
    staff: StaffDep,
    session: SessionDep,
    request: Request,
) -> LesionOut:
    """Add a lesion to follow: its body site and a label that finds it again."""
    lesion = patient_crud.add_lesion(session, patient, body)
    audit.record(session, staff, request, "lesion", patient.id, lesion.id)
    return LesionOut.model_validate(lesion)


@router.get("", responses=NOT_FOUND)
def list_lesions(
    patient: PatientRecordDep, staff: StaffDep, session: SessionDep, request: Request
) -> list[LesionOut]:
    """The patient's lesions, oldest first."""
    lesions = patient_crud.lesions_of(session, patient.id)
    audit.record(session, staff, request, "lesion", patient.id, action="list")
    return [LesionOut.model_validate(x) for x in lesions]


@router.get("/{lesion_id}", responses=NOT_FOUND)
def read_lesion(
    lesion: LesionDep, staff: StaffDep, session: SessionDep, request: Request
) -> LesionOut:
    """One lesion."""
    audit.record(session, staff, request, "lesion", lesion.patient_id, lesion.id)
    return LesionOut.model_validate(lesion)


@router.patch("/{lesion_id}", responses=NOT_FOUND)
def update_lesion(
    body: LesionUpdate, lesion: LesionDep, staff: StaffDep, session: SessionDep, request: Request
) -> LesionOut:
    """Change a lesion's site or label."""
    patient_crud.update(session, lesion, body)
    audit.record(session, staff, request, "lesion", lesion.patient_id, lesion.id)
    return LesionOut.model_validate(lesion)


@router.delete("/{lesion_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_lesion(
    lesion: LesionDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    """Delete a lesion with its predictions, feedback and kept images."""
    patient_id, lesion_id = lesion.patient_id, lesion.id
    files = patient_crud.delete_lesion(session, lesion)
    audit.record(session, staff, request, "lesion", patient_id, lesion_id)
    uploads.remove(settings.uploads_dir, files)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{lesion_id}/history", responses=NOT_FOUND)
def lesion_history(
    lesion: LesionDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    predictor: PredictorDep,
    request: Request,
) -> LesionHistory:
    """The lesion's predictions in time order (visit date, then time of upload), the change
    between consecutive visits and the "changed since last visit" flag."""
    audit.record(session, staff, request, "lesion", lesion.patient_id, lesion.id)
    return history_of(session, lesion, settings, predictor)


def history_of(session, lesion, settings: Settings, predictor: Predictor) -> LesionHistory:
    """The history body; the staff page (routes/lesion_page) renders the same one."""
    timeline = patient_crud.lesion_timeline(session, lesion.id)
    filed = [
        patient_crud.filed(p, v, image_url(lesion.patient_id, lesion.id, p.id)) for p, v in timeline
    ]
    scales = PRESETS[settings.change_framing]
    changes = history_changes(predictor, timeline, settings.uploads_dir, scales)
    return LesionHistory(
        lesion=LesionOut.model_validate(lesion),
        predictions=filed,
        changes=changes,
        changed_since_last_visit=bool(changes) and changes[-1].changed_since_last_visit,
    )
