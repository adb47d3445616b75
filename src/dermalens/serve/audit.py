"""The audit log: who read or changed which patient record, when, from where.

`record` adds the event and commits the request's changes with it in one transaction, so a
change is never stored without its event. Events name patients by their random id only and
have no foreign key, so they stay (who, what, when) after the patient's data is deleted.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from dermalens.serve.account_tables import AuditEventRecord, StaffRecord
from dermalens.serve.crud import spreadsheet_cell
from dermalens.serve.ratelimit import client_address

ACTIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
COLUMNS = [
    "id",
    "at",
    "staff_id",
    "username",
    "action",
    "resource",
    "patient_id",
    "resource_id",
    "method",
    "path",
    "client",
]


def record(
    session: Session,
    staff: StaffRecord | None,
    request: Request,
    resource: str,
    patient_id: str | None = None,
    resource_id: str | None = None,
    action: str | None = None,
    username: str | None = None,
) -> None:
    """Log one access and commit (with whatever the request changed in `session`)."""
    settings = request.app.state.settings
    session.add(
        AuditEventRecord(
            staff_id=staff.id if staff else None,
            username=(staff.username if staff else username or "")[:64],
            action=action or ACTIONS.get(request.method, request.method.lower()),
            resource=resource,
            patient_id=patient_id,
            resource_id=resource_id,
            method=request.method,
            path=request.url.path[:300],
            client=client_address(request, settings.trusted_proxies)[:64] or None,
        )
    )
    session.commit()


def events(
    session: Session,
    patient_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEventRecord]:
    """Events oldest first, optionally of one patient and within [since, until)."""
    query = select(AuditEventRecord).order_by(AuditEventRecord.id)
    if patient_id:
        query = query.where(AuditEventRecord.patient_id == patient_id)
    if since:
        query = query.where(AuditEventRecord.at >= since)
    if until:
        query = query.where(AuditEventRecord.at < until)
    return list(session.scalars(query))


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()
