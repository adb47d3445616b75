"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import text

from dermalens.serve.i18n import _
from dermalens.serve.schemas import Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status, response_model_exclude_none=True)
def healthz() -> Status:
    """The process is up."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"description": "not ready"}})
def readyz(request: Request) -> Status:
    """The model is loaded and the database answers."""
    predictor = getattr(request.app.state, "predictor", None)
    sessions = getattr(request.app.state, "sessions", None)
    if predictor is None or sessions is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, _("model not loaded yet"))
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready", not a crash
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            _("database unavailable (%(error)s)") % {"error": type(exc).__name__},
        ) from None
    return Status(status="ready", model=predictor.bundle.version)
