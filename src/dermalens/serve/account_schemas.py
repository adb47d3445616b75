"""Bodies of the account endpoints (who am I, API tokens) and of the audit log export."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dermalens.serve.clinic_schemas import UtcDatetime


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: str = Field(description="clinician or admin")
    disabled: bool
    created_at: UtcDatetime
    last_login_at: UtcDatetime | None


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["clinic EHR bridge"])


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class TokenCreated(TokenOut):
    token: str = Field(
        description="the bearer token: shown this once, stored only as a SHA-256 digest",
        examples=["dlt_Q2hhbmdlIG1lIGZvciBhIHJlYWwgdG9rZW4gcGxlYXNl"],
    )


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: UtcDatetime
    staff_id: int | None
    username: str
    action: str = Field(description="read, create, update, delete, export, login, ...")
    resource: str = Field(description="patient, lesion, visit, prediction, image, account")
    patient_id: str | None
    resource_id: str | None
    method: str
    path: str
    client: str | None
