"""Each turn's prompt tokens read from and written to the server's prompt cache.

Revision ID: 0006_cached_tokens
Revises: 0005_long_owners
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_cached_tokens"
down_revision: str | None = "0005_long_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        # Turns saved before this recorded no cache figures: NULL, "not reported".
        batch.add_column(sa.Column("reported_cached_tokens", sa.Integer, nullable=True))
        batch.add_column(sa.Column("reported_cache_write_tokens", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("reported_cache_write_tokens")
        batch.drop_column("reported_cached_tokens")
