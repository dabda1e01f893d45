"""Personas an owner created or imported in the app.

Revision ID: 0002_personas
Revises: 0001_initial
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_personas"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "personas",
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("persona_id", sa.String(64), nullable=False),
        sa.Column("yaml", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "persona_id", name="pk_personas"),
    )


def downgrade() -> None:
    op.drop_table("personas")
