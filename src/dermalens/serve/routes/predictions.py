"""Predictions: classify an uploaded image, read a stored result, attach clinician feedback."""

from __future__ import annotations

import time
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

from dermalens.serve import crud, inference
from dermalens.serve.deps import (
    PatientDep,
    QuickCheckDep,
    RecentShiftsDep,
    RouterDep,
    SessionDep,
    SettingsDep,
    StoredPredictionDep,
)
from dermalens.serve.i18n import _
from dermalens.serve.localize import localized
from dermalens.serve.schemas import FeedbackIn, FeedbackOut, PredictionOut
from dermalens.taxonomy import CLASSES

router = APIRouter(prefix="/predictions", tags=["predictions"])

ERRORS = {
    400: {"description": "empty, truncated or corrupt image"},
    413: {"description": "over MAX_UPLOAD_BYTES or MAX_PIXELS"},
    415: {"description": "not an image"},
    422: {"description": "a form field is out of range or unknown"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[QuickCheckDep],
    responses={
        **ERRORS,
        401: {"description": "the anonymous quick check is off and no account was given"},
        429: {"description": "over the anonymous rate limit (DERMALENS_ANONYMOUS_RATE_LIMIT)"},
    },
)
def create_prediction(
    file: Annotated[UploadFile, File(description="the lesion image (JPEG, PNG, WebP, ...)")],
    patient: PatientDep,
    models: RouterDep,
    session: SessionDep,
    settings: SettingsDep,
    recent: RecentShiftsDep,
    request: Request,
    response: Response,
    consent: Annotated[
        bool, Form(description="keep the image (EXIF removed) to improve the model")
    ] = False,
    explain: Annotated[bool, Query(description="add a Grad-CAM heatmap")] = True,
    overlay: Annotated[
        bool,
        Query(
            description="with explain: also render the heatmap as a PNG overlay "
            "(heatmap.image); false: only the small CAM grid (heatmap.grid), for a client "
            "that colours it itself, which is much cheaper under load"
        ),
    ] = True,
    top_k: Annotated[int | None, Query(ge=1, le=50, description="classes to return")] = None,
) -> PredictionOut:
    """Classify one lesion image: top-k classes, triage, uncertainty and a heatmap."""
    t0 = time.perf_counter()
    out, image_file = inference.classify_upload(
        models,
        file,
        settings,
        patient,
        models.decode_size,
        consent,
        explain,
        top_k or settings.top_k,
        overlay,
        recent,
    )
    out.timings_ms["total"] = round((time.perf_counter() - t0) * 1e3, 2)
    crud.add_prediction(session, out, image_file)
    response.headers["Location"] = str(request.url_for("read_prediction", prediction_id=out.id))
    return localized(out)


@router.get("/{prediction_id}", responses={404: {"description": "unknown id"}})
def read_prediction(prediction: StoredPredictionDep) -> PredictionOut:
    """The stored result of a prediction (without the heatmap overlay, which is not kept)."""
    return localized(PredictionOut.model_validate(prediction.result))


def correct_label(body: FeedbackIn, predicted: str) -> str | None:
    """The verdict's class code, lower-cased; 422 naming `correct_label` when it does not fit."""
    label = (body.correct_label or "").strip().lower() or None
    if label is not None and label not in CLASSES:
        message = _("correct_label: %(label)s is not a class code; use one of %(codes)s") % {
            "label": repr(label),
            "codes": sorted(CLASSES),
        }
    elif not body.agree and label is None:
        message = _("correct_label: required when agree is false")
    elif body.agree and label not in (None, predicted):
        message = _(
            "correct_label: %(label)s contradicts agree=true (the prediction was %(predicted)s)"
        ) % {"label": repr(label), "predicted": repr(predicted)}
    else:
        return label
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


@router.post(
    "/{prediction_id}/feedback",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "unknown id"}, 422: {"description": "bad verdict"}},
)
def create_feedback(
    prediction: StoredPredictionDep, body: FeedbackIn, session: SessionDep
) -> FeedbackOut:
    """Record a clinician's verdict: agree, or the correct class, with an optional note."""
    label = correct_label(body, prediction.label)
    return crud.add_feedback(session, prediction, body.model_copy(update={"correct_label": label}))
