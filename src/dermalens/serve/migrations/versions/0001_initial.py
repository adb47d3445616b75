"""Initial schema: predictions and feedback.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("age", sa.Float(), nullable=True),
        sa.Column("sex", sa.String(16), nullable=True),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("image_file", sa.String(64), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
    )
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("predicted_label", sa.String(64), nullable=False),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.Column("correct_label", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_feedback_prediction_id", "feedback", ["prediction_id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_prediction_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    op.drop_table("predictions")
