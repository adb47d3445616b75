"""The audit log export, for admins: who read or changed which patient record, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from dermalens.serve import audit
from dermalens.serve.account_schemas import AuditEventOut
from dermalens.serve.clinic_deps import AUTH_ERRORS
from dermalens.serve.deps import AdminDep, SessionDep

router = APIRouter(prefix="/audit", tags=["audit"], responses=AUTH_ERRORS)


@router.get(
    "",
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}},
        403: {"description": "not an admin account (or disabled, or no CSRF token)"},
    },
)
def export_audit(
    admin: AdminDep,
    session: SessionDep,
    request: Request,
    patient_id: Annotated[str | None, Query(max_length=32, description="one patient")] = None,
    since: Annotated[datetime | None, Query(description="from this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before this time")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Response:
    """Export audit events, oldest first (the export itself is logged too)."""
    rows = [
        AuditEventOut.model_validate(e).model_dump(mode="json")
        for e in audit.events(session, patient_id, since, until)
    ]
    audit.record(session, admin, request, "audit", patient_id, action="export")
    if format == "csv":
        return Response(
            audit.to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="dermalens-audit.csv"'},
        )
    return JSONResponse({"count": len(rows), "events": rows})
