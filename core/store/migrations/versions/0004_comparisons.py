"""Comparisons: one question sent to several columns, each column a conversation of its own.

Revision ID: 0004_comparisons
Revises: 0003_summaries
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_comparisons"
down_revision: str | None = "0003_summaries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
    )
    op.create_index("ix_comparisons_owner_updated_at", "comparisons", ["owner", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_comparisons_owner_updated_at", table_name="comparisons")
    op.drop_table("comparisons")
