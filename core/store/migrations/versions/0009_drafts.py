"""Drafts: text of a conversation that is not in its messages yet. A reply still streaming is
saved here every few seconds (so a crash keeps it, recovered as an interrupted reply), and a
stale tab's message that could not be saved waits here to be offered back.

Revision ID: 0009_drafts
Revises: 0008_count_margin
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_drafts"
down_revision: str | None = "0008_count_margin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column(
            "conversation_id",
            sa.String(32),
            sa.ForeignKey(
                "conversations.id", ondelete="CASCADE", name="fk_drafts_conversation_id_conversations"
            ),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "kind", name="pk_drafts"),
    )


def downgrade() -> None:
    op.drop_table("drafts")
