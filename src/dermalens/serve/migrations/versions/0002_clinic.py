"""Clinic records and access control: patients, lesions, visits (predictions gain a nullable
lesion and visit), staff accounts, API tokens, login sessions and the audit log.

Existing predictions and feedback are kept as they are: both new prediction columns are
nullable, and they are added in place.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _times(*names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(n, sa.DateTime(timezone=True), nullable=nullable) for n in names]


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("clinic_id", sa.String(64), nullable=False, unique=True),
        sa.Column("sex", sa.String(16), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        *_times("created_at", "updated_at"),
    )
    op.create_table(
        "lesions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("patient_id", sa.String(32), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        *_times("created_at", "updated_at"),
    )
    op.create_index("ix_lesions_patient_id", "lesions", ["patient_id"])
    op.create_table(
        "visits",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("patient_id", sa.String(32), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        *_times("created_at"),
    )
    op.create_index("ix_visits_patient_id", "visits", ["patient_id"])
    for column, table in (("lesion_id", "lesions"), ("visit_id", "visits")):
        _add_reference(column, table)
        op.create_index(f"ix_predictions_{column}", "predictions", [column])
    _accounts()


def _add_reference(column: str, table: str) -> None:
    """predictions.<column> -> <table>.id, nullable, added in place with every row kept."""
    name = f"fk_predictions_{column}"
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode: its copy-and-move drops `predictions`, which the feedback rows
        # reference (foreign keys are on). SQLite's ADD COLUMN may carry the reference itself.
        op.execute(
            f"ALTER TABLE predictions ADD COLUMN {column} VARCHAR(32) "
            f"CONSTRAINT {name} REFERENCES {table} (id)"
        )
        return
    key = sa.ForeignKey(f"{table}.id", name=name)
    op.add_column("predictions", sa.Column(column, sa.String(32), key, nullable=True))


def _accounts() -> None:
    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        *_times("locked_until", nullable=True),
        *_times("created_at"),
        *_times("last_login_at", nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("staff_id", sa.Integer(), sa.ForeignKey("staff.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        *_times("created_at"),
        *_times("last_used_at", "revoked_at", nullable=True),
    )
    op.create_index("ix_api_tokens_staff_id", "api_tokens", ["staff_id"])
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.Integer(), sa.ForeignKey("staff.id"), nullable=False),
        *_times("created_at", "expires_at", "last_seen_at"),
    )
    op.create_index("ix_login_sessions_staff_id", "login_sessions", ["staff_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        *_times("at"),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.String(32), nullable=True),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_patient_id", "audit_events", ["patient_id"])


def downgrade() -> None:
    for table in ("audit_events", "login_sessions", "api_tokens", "staff"):
        op.drop_table(table)
    for column in ("visit_id", "lesion_id"):
        op.drop_index(f"ix_predictions_{column}", table_name="predictions")
        with op.batch_alter_table("predictions") as batch:  # SQLite cannot drop a column's FK
            batch.drop_constraint(f"fk_predictions_{column}", type_="foreignkey")
            batch.drop_column(column)
    for table in ("visits", "lesions", "patients"):
        op.drop_table(table)
