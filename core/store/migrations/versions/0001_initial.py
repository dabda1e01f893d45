"""Conversations, their messages, turns and trim events.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25

Written out in full (not from core.store.database's tables), so it creates this schema whatever the
tables in the code become; later revisions change it from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
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
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("persona_id", sa.String(200), nullable=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("title_is_auto", sa.Boolean, nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("ix_conversations_owner_updated_at", "conversations", ["owner", "updated_at"])

    op.create_table(
        "messages",
        _parent("messages"),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("cut_off", sa.Boolean, nullable=False),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # An imported file may carry message ids another conversation already has.
        sa.PrimaryKeyConstraint("conversation_id", "message_id", name="pk_messages"),
        sa.UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_id_position"),
    )

    op.create_table(
        "turns",
        _parent("turns"),
        sa.Column("number", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("context_budget", sa.Integer, nullable=False),
        sa.Column("messages_sent", sa.Integer, nullable=False),
        sa.Column("counted_prompt_tokens", sa.Integer, nullable=False),
        sa.Column("count_exact", sa.Boolean, nullable=False),
        sa.Column("reported_prompt_tokens", sa.Integer, nullable=True),
        sa.Column("reported_completion_tokens", sa.Integer, nullable=True),
        sa.Column("counted_completion_tokens", sa.Integer, nullable=False),
        sa.Column("usage_source", sa.String(16), nullable=True),
        sa.Column("latency_s", sa.Float, nullable=True),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("finish_reason", sa.String(64), nullable=True),
        sa.Column("reply_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "number", name="pk_turns"),
    )

    op.create_table(
        "trim_events",
        _parent("trim_events"),
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("dropped", sa.Text, nullable=False),
        sa.Column("tokens_before", sa.Integer, nullable=False),
        sa.Column("tokens_after", sa.Integer, nullable=False),
        sa.Column("budget", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name="pk_trim_events"),
    )


def downgrade() -> None:
    op.drop_table("trim_events")
    op.drop_table("turns")
    op.drop_table("messages")
    op.drop_index("ix_conversations_owner_updated_at", table_name="conversations")
    op.drop_table("conversations")
