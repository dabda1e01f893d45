"""The running summary (policy "summarize"): its versions and events, and each turn's summary tokens.

Revision ID: 0003_summaries
Revises: 0002_personas
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_summaries"
down_revision: str | None = "0002_personas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _parent(table: str) -> sa.Column[str]:
    return sa.Column(
        "conversation_id",
        sa.String(32),
        sa.ForeignKey(
            "conversations.id", ondelete="CASCADE", name=f"fk_{table}_conversation_id_conversations"
        ),
        nullable=False,
    )


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        # Turns saved before summaries sent none.
        batch.add_column(sa.Column("summary_tokens", sa.Integer, nullable=False, server_default=sa.text("0")))

    op.create_table(
        "summary_versions",
        _parent("summary_versions"),
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("through_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name="pk_summary_versions"),
    )

    op.create_table(
        "summary_events",
        _parent("summary_events"),
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("folded", sa.Text, nullable=False),
        sa.Column("dropped", sa.Text, nullable=False),
        sa.Column("tokens_before", sa.Integer, nullable=False),
        sa.Column("tokens_after", sa.Integer, nullable=False),
        sa.Column("summary_tokens", sa.Integer, nullable=False),
        sa.Column("budget", sa.Integer, nullable=False),
        sa.Column("summarizer_model", sa.String(200), nullable=True),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("summarizer_prompt_tokens", sa.Integer, nullable=True),
        sa.Column("summarizer_completion_tokens", sa.Integer, nullable=True),
        sa.Column("usage_source", sa.String(16), nullable=True),
        sa.Column("resummarized", sa.Boolean, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.Column("fallback_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name="pk_summary_events"),
    )


def downgrade() -> None:
    op.drop_table("summary_events")
    op.drop_table("summary_versions")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("summary_tokens")
