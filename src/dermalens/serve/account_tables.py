"""Database tables for access control: staff accounts, their API tokens and login sessions,
and the audit log of who read or changed which patient record.

Secrets are never stored: passwords as argon2 hashes, API tokens and session cookies as
SHA-256 digests (they are random 256-bit values, so a fast hash cannot be brute-forced).
Audit events hold no foreign key to patients: they outlive a deleted patient's record."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dermalens.serve.tables import Base, utcnow


class StaffRecord(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # clinician or admin
    password_hash: Mapped[str] = mapped_column(String(256))  # argon2id, PHC string
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # since the last success
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiTokenRecord(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # refused from then on; tokens made before revision 0003 got one there (see it)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginSessionRecord(Base):
    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # absolute limit
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEventRecord(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    staff_id: Mapped[int | None] = mapped_column(Integer)  # no FK: kept as the log's own fact
    username: Mapped[str] = mapped_column(String(64))  # who, readable after renames
    action: Mapped[str] = mapped_column(String(16))  # read, create, update, delete, export, ...
    resource: Mapped[str] = mapped_column(String(32))  # patient, lesion, visit, prediction, ...
    patient_id: Mapped[str | None] = mapped_column(String(32), index=True)  # no FK, see above
    resource_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))  # holds random ids only, never clinical text
    client: Mapped[str | None] = mapped_column(String(64))
