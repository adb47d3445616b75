"""Images of a lesion at a visit: upload one (the same inference path as POST
/api/v1/predictions: the scope gate's `Router`), file an earlier quick-check prediction,
fetch or delete a kept image."""

from __future__ import annotations

from typing import Annotated

from fastapi import (
    APIRouter,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.responses import FileResponse

from dermalens.serve import audit, crud, inference, patient_crud, uploads
from dermalens.serve.clinic_deps import AUTH_ERRORS, LesionDep, conflict, image_url
from dermalens.serve.clinic_schemas import AttachIn, LesionPrediction
from dermalens.serve.deps import (
    RecentShiftsDep,
    RouterDep,
    SessionDep,
    SettingsDep,
    StaffDep,
)
from dermalens.serve.i18n import _
from dermalens.serve.routes.predictions import ERRORS
from dermalens.serve.schemas import Patient
from dermalens.serve.tables import LesionRecord, PatientRecord, PredictionRecord, VisitRecord

router = APIRouter(
    prefix="/patients/{patient_id}/lesions/{lesion_id}/predictions",
    tags=["lesions"],
    responses=AUTH_ERRORS,
)
NOT_FOUND = {404: {"description": "unknown patient, lesion or prediction id"}}


def age_at(birth_year: int | None, visit: VisitRecord) -> float | None:
    """The patient's age in whole years at the visit (None when unknown or implausible)."""
    if birth_year is None:
        return None
    age = visit.date.year - birth_year
    return float(age) if 0 <= age <= 120 else None


def model_input(session, lesion: LesionRecord, visit: VisitRecord) -> Patient:
    """The model's patient fields from the records: age at the visit, sex, lesion site."""
    patient = session.get(PatientRecord, lesion.patient_id)
    return Patient(age=age_at(patient.birth_year, visit), sex=patient.sex, site=lesion.site)


def visit_for(session, lesion: LesionRecord, visit_id: str) -> VisitRecord:
    try:
        return patient_crud.visit_of(session, lesion, visit_id)
    except patient_crud.Conflict as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"visit_id: {exc}") from None


def filed_prediction(session, lesion: LesionRecord, prediction_id: str) -> PredictionRecord:
    record = session.get(PredictionRecord, prediction_id)
    if record is None or record.lesion_id != lesion.id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            _("prediction %(id)s not found under lesion %(lesion)s")
            % {"id": repr(prediction_id), "lesion": repr(lesion.id)},
        )
    return record


@router.post("", status_code=status.HTTP_201_CREATED, responses={**ERRORS, **NOT_FOUND})
def upload_image(
    file: Annotated[UploadFile, File(description="the lesion image (JPEG, PNG, WebP, ...)")],
    visit_id: Annotated[str, Form(max_length=32, description="the visit it was taken at")],
    lesion: LesionDep,
    staff: StaffDep,
    models: RouterDep,
    session: SessionDep,
    settings: SettingsDep,
    recent: RecentShiftsDep,
    request: Request,
    keep_image: Annotated[bool, Form(description="keep the image (EXIF removed)")] = True,
    explain: Annotated[bool, Query(description="add a Grad-CAM heatmap overlay")] = True,
    top_k: Annotated[int | None, Query(ge=1, le=50, description="classes to return")] = None,
    overlay: Annotated[bool, Query(description="with explain: also the PNG overlay")] = True,
) -> LesionPrediction:
    """Classify an image of this lesion taken at a visit and file the result there; age, sex
    and site come from the records."""
    visit = visit_for(session, lesion, visit_id)
    out, image_file = inference.classify_upload(
        models,  # the scope gate and the model made for the image, as POST /predictions
        file,
        settings,
        model_input(session, lesion, visit),
        models.decode_size,
        keep_image,
        explain,
        top_k or settings.top_k,
        overlay,
        recent,
    )
    crud.add_prediction(session, out, image_file, lesion.id, visit.id)
    audit.record(session, staff, request, "prediction", lesion.patient_id, out.id)
    url = image_url(lesion.patient_id, lesion.id, out.id) if image_file else None
    return LesionPrediction(
        prediction_id=out.id,
        lesion_id=lesion.id,
        visit_id=visit.id,
        visit_date=visit.date,
        image_url=url,
        prediction=out,
    )


@router.put("/{prediction_id}", responses={**NOT_FOUND, 409: {"description": "filed elsewhere"}})
def attach_prediction(
    prediction_id: str,
    body: AttachIn,
    lesion: LesionDep,
    staff: StaffDep,
    session: SessionDep,
    request: Request,
) -> LesionPrediction:
    """File an earlier prediction (e.g. a quick check) under this lesion at a visit."""
    record = session.get(PredictionRecord, prediction_id)
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            _("prediction %(id)s not found") % {"id": repr(prediction_id)},
        )
    visit = visit_for(session, lesion, body.visit_id)
    try:
        patient_crud.attach(session, record, lesion, visit)
    except patient_crud.Conflict as exc:
        raise conflict(exc) from None
    audit.record(session, staff, request, "prediction", lesion.patient_id, record.id)
    return patient_crud.filed(record, visit, image_url(lesion.patient_id, lesion.id, record.id))


@router.get(
    "/{prediction_id}/image",
    response_class=FileResponse,
    responses={**NOT_FOUND, 200: {"content": {"image/jpeg": {}}}},
)
def read_image(
    prediction_id: str,
    lesion: LesionDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> FileResponse:
    """The kept image of a filed prediction (JPEG, EXIF removed)."""
    record = filed_prediction(session, lesion, prediction_id)
    path = uploads.kept_path(settings.uploads_dir, record.image_file)
    if path is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            _("prediction %(id)s has no kept image") % {"id": repr(prediction_id)},
        )
    audit.record(session, staff, request, "image", lesion.patient_id, record.id)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.delete("/{prediction_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_prediction(
    prediction_id: str,
    lesion: LesionDep,
    staff: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    """Delete a filed prediction with its feedback and kept image."""
    record = filed_prediction(session, lesion, prediction_id)
    files = patient_crud.delete_predictions(session, [record])
    audit.record(session, staff, request, "prediction", lesion.patient_id, prediction_id)
    uploads.remove(settings.uploads_dir, files)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
