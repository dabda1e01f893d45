"""Test sets: an owner's named lists of prompts, and each run of one against several columns.

Revision ID: 0007_test_sets
Revises: 0006_cached_tokens
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_test_sets"
down_revision: str | None = "0006_cached_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER = sa.String(255).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "test_sets",
        sa.Column("owner", OWNER, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prompts", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "name", name="pk_test_sets"),
    )
    op.create_table(
        "test_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", OWNER, nullable=False),
        sa.Column("test_set", sa.String(200), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_test_runs"),
    )
    op.create_index(
        "ix_test_runs_owner_test_set_created_at", "test_runs", ["owner", "test_set", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_test_runs_owner_test_set_created_at", table_name="test_runs")
    op.drop_table("test_runs")
    op.drop_table("test_sets")
