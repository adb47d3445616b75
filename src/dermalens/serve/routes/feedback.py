"""Feedback export for model monitoring and re-training; needs the API token."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from dermalens.serve import crud
from dermalens.serve.deps import SessionDep, TokenDep

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.get(
    "",
    dependencies=[TokenDep],
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}},
        401: {"description": "no token"},
        403: {"description": "wrong token, or export disabled"},
    },
)
def export_feedback(
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Response:
    """Export all clinician feedback with model versions and timestamps (JSON or CSV)."""
    rows = crud.feedback_rows(session)
    if format == "csv":
        return Response(
            crud.to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="dermalens-feedback.csv"'},
        )
    return JSONResponse({"count": len(rows), "feedback": rows})
