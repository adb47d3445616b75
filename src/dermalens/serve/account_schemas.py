"""Bodies of the account endpoints (who am I, API tokens, the admins' staff accounts) and of
the audit log export. No body ever holds a password, a password hash or a token digest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from dermalens.serve.accounts import token_state
from dermalens.serve.clinic_schemas import UtcDatetime
from dermalens.serve.schemas import storable

Role = Literal["clinician", "admin"]  # accounts.ROLES
# Long enough for any pass phrase; the bound keeps a request from making argon2 hash megabytes.
Password = Field(min_length=1, max_length=1024, description="checked like the CLI's (length)")


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
    days: int | None = Field(
        None,
        ge=1,
        description="lifetime in days; default DERMALENS_TOKEN_DAYS (90), at most "
        "DERMALENS_TOKEN_MAX_DAYS (365)",
        examples=[30],
    )

    _storable = field_validator("name")(storable)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    expires_at: UtcDatetime = Field(description="refused from this time on")

    @computed_field(description="active, revoked or expired (now)")
    @property
    def state(self) -> Literal["active", "revoked", "expired"]:
        return token_state(self.revoked_at, self.expires_at)


class TokenCreated(TokenOut):
    token: str = Field(
        description="the bearer token: shown this once, stored only as a SHA-256 digest",
        examples=["dlt_Q2hhbmdlIG1lIGZvciBhIHJlYWwgdG9rZW4gcGxlYXNl"],
    )


class UserOut(StaffOut):
    """A staff account as an admin sees it."""

    locked_until: UtcDatetime | None = Field(description="locked after failed logins until")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, examples=["carla"])
    role: Role = "clinician"
    password: str = Password


class UserChange(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = Field(None, description="true: sessions end, tokens are refused")
    role: Role | None = None


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Password


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
