"""Each turn's count margin: how far an estimated prompt count may have been short, so a server
report far below it is known for a silent cut of the prompt.

Revision ID: 0008_count_margin
Revises: 0007_test_sets
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_count_margin"
down_revision: str | None = "0007_test_sets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        # Turns saved before this were taken as exact.
        batch.add_column(sa.Column("count_margin", sa.Float, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("count_margin")
