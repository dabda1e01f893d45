"""Owners of any length: `oidc:` + the issuer + `|` + a subject of up to 255 characters is longer
than the VARCHAR(255) the owner columns had, which PostgreSQL refuses.

SQLite never enforces a VARCHAR's length, and altering its columns would rebuild the tables (a
DROP that cascades to every conversation's messages), so only PostgreSQL's columns change.

Revision ID: 0005_long_owners
Revises: 0004_comparisons
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_long_owners"
down_revision: str | None = "0004_comparisons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER_TABLES = ("conversations", "comparisons", "personas")


def change_owner_type(old: sa.types.TypeEngine[str], new: sa.types.TypeEngine[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in OWNER_TABLES:
            op.alter_column(table, "owner", type_=new, existing_type=old, existing_nullable=False)


def upgrade() -> None:
    change_owner_type(sa.String(255), sa.Text())


def downgrade() -> None:
    change_owner_type(sa.Text(), sa.String(255))
