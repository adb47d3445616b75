"""Typed dependencies: settings, the loaded predictor, a database session, the API token,
the signed-in staff account (and admin), a staff account named in the path (for admins),
the anonymous quick check's gate, patient fields from the form, and a stored prediction
looked up by id."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dermalens import patient
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.router import Router
from dermalens.serve import audit, auth, crud, patient_crud
from dermalens.serve.account_tables import StaffRecord
from dermalens.serve.i18n import N_, _
from dermalens.serve.inference import RecentShifts
from dermalens.serve.ratelimit import client_address
from dermalens.serve.schemas import Patient
from dermalens.serve.settings import Settings
from dermalens.serve.tables import PredictionRecord


# Getters of what the lifespan loaded are `async def`: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop each (and a wait for the GIL under load) for
# an attribute read.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def get_recent_shifts(request: Request) -> RecentShifts:
    return request.app.state.recent_shifts


async def get_router(request: Request) -> Router:
    return request.app.state.router


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
RouterDep = Annotated[Router, Depends(get_router)]
SessionDep = Annotated[Session, Depends(get_session)]
RecentShiftsDep = Annotated[RecentShifts, Depends(get_recent_shifts)]
bearer = HTTPBearer(auto_error=False, description="the server's DERMALENS_API_TOKEN")
staff_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="StaffToken",
    description="a staff API token (dlt_...), made on /account or POST /api/v1/me/tokens",
)
StaffCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(staff_bearer)]


def current_staff(
    request: Request, session: SessionDep, settings: SettingsDep, credentials: StaffCredentials
) -> StaffRecord:
    """The signed-in account (token or session); 401 / 403 with the reason otherwise."""
    return auth.authenticate(request, session, settings, credentials)


StaffDep = Annotated[StaffRecord, Depends(current_staff)]


def current_admin(staff: StaffDep) -> StaffRecord:
    return auth.require_admin(staff)


AdminDep = Annotated[StaffRecord, Depends(current_admin)]


# An integer id in a path: within the database's INTEGER, so a larger one is a 422, not an
# out-of-range error from PostgreSQL.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def path_user(user_id: RowId, admin: AdminDep, session: SessionDep) -> StaffRecord:
    """The staff account `user_id`, for an admin (401 / 403 first); 404 naming the id."""
    user = session.get(StaffRecord, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _("user %(id)s not found") % {"id": user_id})
    return user


UserDep = Annotated[StaffRecord, Depends(path_user)]


def quick_check(
    request: Request, session: SessionDep, settings: SettingsDep, credentials: StaffCredentials
) -> None:
    """Staff pass; anyone else only while the anonymous quick check is on, rate-limited."""
    if auth.has_credentials(request, settings):
        try:
            auth.authenticate(request, session, settings, credentials)
            return
        except HTTPException:
            if not settings.anonymous_predictions:
                raise
    if not settings.anonymous_predictions:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            _(
                "the anonymous quick check is off on this server: log in at /login, or send "
                "'Authorization: Bearer <token>' with a staff API token"
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.app.state.rate_limits.check(
        settings.anonymous_rate_limit,
        "predict",
        client_address(request, settings.trusted_proxies),
        _(
            "too many predictions from this address without an account (limit {rule}); "
            "try again in {seconds} s"
        ),
    )


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 without a bearer token, 403 with a wrong one (or when none is configured)."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            _("missing API token; send the header 'Authorization: Bearer <token>'"),
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    if not expected:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            _("feedback export is disabled: the server has no API token (DERMALENS_API_TOKEN)"),
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, _("invalid API token"))


# `patient.validate`'s checks, worded for the request's language
PATIENT_ERRORS = {
    "age": N_("age: %(value)s is out of range 0-120"),
    "sex": N_("sex: %(value)s is not one of %(allowed)s"),
    "site": N_("site: %(value)s is not one of %(allowed)s"),
}


def patient_error(exc: ValueError, age: float | None, sex: str | None, site: str | None) -> str:
    field = str(exc).partition(":")[0]
    if field not in PATIENT_ERRORS:
        return str(exc)
    value = {"age": age, "sex": repr(sex), "site": repr(site)}[field]
    allowed = list(patient.SEXES if field == "sex" else patient.SITES)
    return _(PATIENT_ERRORS[field]) % {"value": value, "allowed": allowed}


def _choice(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return value or None


CLINICAL_HELP = (
    "optional JSON object of clinical fields, used by a model that takes them (see "
    '/model metadata_fields), e.g. {"itch": "yes", "diameter_1": 6}: '
    + "; ".join(f"{name}: {what}" for name, (what, *_unused) in patient.CLINICAL.items())
)


async def patient_form(  # async: no I/O, no thread hop (see get_settings)
    age: Annotated[float | None, Form(description="years, 0-120")] = None,
    sex: Annotated[str | None, Form(description=f"one of {list(patient.SEXES)}")] = None,
    site: Annotated[str | None, Form(description=f"one of {list(patient.SITES)}")] = None,
    clinical: Annotated[str | None, Form(description=CLINICAL_HELP)] = None,
) -> Patient:
    """Optional patient fields; 422 naming the field when one is out of range or unknown."""
    sex, site = _choice(sex), _choice(site)
    try:
        patient.validate(age, sex, site)
        fields = patient.validate_clinical(_clinical_json(clinical))
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, patient_error(exc, age, sex, site)
        ) from None
    return Patient(age=age, sex=sex, site=site, clinical=fields)


def _clinical_json(text: str | None) -> dict:
    if not (text or "").strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"clinical: {text[:80]!r} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("clinical: must be a JSON object of field: value")
    return value


def stored_prediction(
    prediction_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: StaffCredentials,
) -> PredictionRecord:
    """A stored prediction; one filed under a patient needs an account and is audited."""
    record = crud.get_prediction(session, prediction_id)
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            _("prediction %(id)s not found") % {"id": repr(prediction_id)},
        )
    if record.lesion_id is not None:
        staff = auth.authenticate(request, session, settings, credentials)
        patient_id = patient_crud.patient_of_lesion(session, record.lesion_id)
        audit.record(session, staff, request, "prediction", patient_id, record.id)
    return record


PatientDep = Annotated[Patient, Depends(patient_form)]
TokenDep = Depends(require_token)
QuickCheckDep = Depends(quick_check)
StoredPredictionDep = Annotated[PredictionRecord, Depends(stored_prediction)]
