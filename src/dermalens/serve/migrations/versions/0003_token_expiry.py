"""API tokens expire: api_tokens gains expires_at (not null).

Tokens made before this revision had no end. Each now gets its created_at + 90 days (the
default DERMALENS_TOKEN_DAYS), but never sooner than 30 days after the upgrade: a script that
uses an old token keeps working for a month, while its owner sees the date (GET
/api/v1/me/tokens, /account) and makes a new one. Revoked tokens get a date too and stay
revoked. Every row and every other column is kept as it was.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_DAYS = 90  # DERMALENS_TOKEN_DAYS' default when this revision was written
GRACE_DAYS = 30  # an old token lasts at least this long after the upgrade

TOKENS = sa.table(
    "api_tokens",
    sa.column("id", sa.Integer()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("expires_at", sa.DateTime(timezone=True)),
)


def expiry_of_old_token(created_at: datetime, upgraded_at: datetime) -> datetime:
    created_at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)  # SQLite
    return max(created_at + timedelta(days=DEFAULT_DAYS), upgraded_at + timedelta(days=GRACE_DAYS))


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    upgraded_at = datetime.now(UTC)
    # Row by row in Python: date arithmetic differs between SQL dialects, and a clinic has
    # few tokens.
    for token_id, created_at in bind.execute(sa.select(TOKENS.c.id, TOKENS.c.created_at)).all():
        expires_at = expiry_of_old_token(created_at, upgraded_at)
        bind.execute(TOKENS.update().where(TOKENS.c.id == token_id).values(expires_at=expires_at))
    # SQLite cannot change a column's nullability in place: batch mode copies the table,
    # which is safe here since no other table references api_tokens.
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
