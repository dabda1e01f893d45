"""Saved conversations: SQLite on one machine, PostgreSQL for several replicas.

Every method takes the `owner` (whoever the session says the user is) and only ever touches that
owner's rows: another owner's conversation id behaves exactly like one that does not exist.

A save is one transaction that writes what was added since the last save (new messages, turns,
trim events, summary versions and summary events), rewrites the messages changed in place, and
bumps the conversation's version with `UPDATE ... WHERE version = :expected`. When another tab
or replica saved first, nothing is written and `StaleConversation` says to reload. A save costs
what changed, never the history.

The schema is created and upgraded by the Alembic migrations in `core/store/migrations/`, run when a
`Store` opens. API keys are never stored: nothing key-like is part of a `Conversation`.
See docs/storage.md.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, unquote
from uuid import uuid4

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from core.chat.conversation import PREVIEW_CHARS, Conversation, Message
from core.errors import ConfigError, ConversationImportError, ConversationStateError, DashboardError

#: Where the conversations live when DATABASE_URL is not set.
DEFAULT_PATH: Final = Path(__file__).resolve().parents[2] / "data" / "dashboard.db"
MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
MAX_TITLE_CHARS: Final = 200
#: How long a SQLite write waits for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT_S: Final = 5.0
#: Held (per transaction) while PostgreSQL replicas upgrade the schema, so only one does it.
_PG_MIGRATION_LOCK: Final = 0x5045_5253_4F4E_4153  # "PERSONAS"
_SQLITE_HEADER: Final = b"SQLite format 3\x00"


# --- errors --------------------------------------------------------------------------------


class StoreError(DashboardError):
    """Conversations could not be saved or loaded."""


class ConversationNotFound(StoreError, LookupError):
    """No conversation with this id belongs to this owner (whether or not another owner has one)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"There is no saved conversation {conversation_id!r}.")
        self.conversation_id = conversation_id
        self.coded("conversation_not_found", id=conversation_id)


class StaleConversation(StoreError):
    """Another tab or replica saved this conversation first; nothing was written. Reload it."""

    def __init__(self, conversation_id: str, expected: int, found: int) -> None:
        super().__init__(
            f"Conversation {conversation_id!r} was saved elsewhere (another tab or window) since it was "
            f"loaded here (version {found}, expected {expected}); nothing was saved. Reload it to go on."
        )
        self.conversation_id = conversation_id
        self.expected = expected
        self.found = found
        self.coded("stale_conversation", expected=expected, found=found)


class StoreUnavailable(StoreError):
    """The database is missing, unreachable, read-only, locked or full. `where` names it (the file
    path, or the URL without credentials)."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class NotADatabase(StoreError):
    """The file at the path is not this app's database (corrupted, or another application's); it is
    left untouched."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class InvalidTitle(StoreError, ValueError):
    """A title that is empty or too long."""


# --- schema (created by core/store/migrations; the migrations are the source of truth) -------------


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A UTC timestamp on every backend (SQLite keeps no time zone): aware in, aware out."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
#: Who owns a row (core/policy/owners.py): unbounded, since an OIDC owner is `oidc:` + the issuer + a subject
#: of up to 255 characters. SQLite never enforces a VARCHAR's length (see migration 0005).
OWNER_TYPE: Final = sa.String(255).with_variant(sa.Text(), "postgresql")

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", OWNER_TYPE, nullable=False),
    sa.Column("persona_id", sa.String(200)),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("title_is_auto", sa.Boolean, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
    sa.Index("ix_conversations_owner_updated_at", "owner", "updated_at"),
)


def _parent() -> sa.Column[str]:
    """The conversation a child row belongs to (removed with it)."""
    return sa.Column(
        "conversation_id",
        sa.String(32),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    )


messages = sa.Table(
    "messages",
    metadata,
    _parent(),
    sa.Column("message_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("pinned", sa.Boolean, nullable=False),
    sa.Column("interrupted", sa.Boolean, nullable=False),
    sa.Column("cut_off", sa.Boolean, nullable=False),
    sa.Column("automatic", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("conversation_id", "position"),
)

turns = sa.Table(
    "turns",
    metadata,
    _parent(),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("context_budget", sa.Integer, nullable=False),
    sa.Column("messages_sent", sa.Integer, nullable=False),
    sa.Column("counted_prompt_tokens", sa.Integer, nullable=False),
    sa.Column("count_exact", sa.Boolean, nullable=False),
    sa.Column("count_margin", sa.Float, nullable=False, server_default=sa.text("0")),
    sa.Column("reported_prompt_tokens", sa.Integer),
    sa.Column("reported_completion_tokens", sa.Integer),
    sa.Column("reported_cached_tokens", sa.Integer),
    sa.Column("reported_cache_write_tokens", sa.Integer),
    sa.Column("counted_completion_tokens", sa.Integer, nullable=False),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("latency_s", sa.Float),
    sa.Column("interrupted", sa.Boolean, nullable=False),
    sa.Column("finish_reason", sa.String(64)),
    sa.Column("reply_id", sa.String(64)),
    sa.Column("summary_tokens", sa.Integer, nullable=False, server_default=sa.text("0")),
)

trim_events = sa.Table(
    "trim_events",
    metadata,
    _parent(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("turn", sa.Integer, nullable=False),
    #: JSON list of the dropped message ids, oldest first.
    sa.Column("dropped", sa.Text, nullable=False),
    sa.Column("tokens_before", sa.Integer, nullable=False),
    sa.Column("tokens_after", sa.Integer, nullable=False),
    sa.Column("budget", sa.Integer, nullable=False),
)

#: The running summary's versions (policy "summarize"), oldest first; the last is the summary.
summary_versions = sa.Table(
    "summary_versions",
    metadata,
    _parent(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("through_id", sa.String(64)),
)

summary_events = sa.Table(
    "summary_events",
    metadata,
    _parent(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("turn", sa.Integer, nullable=False),
    #: JSON lists of message ids, oldest first.
    sa.Column("folded", sa.Text, nullable=False),
    sa.Column("dropped", sa.Text, nullable=False),
    sa.Column("tokens_before", sa.Integer, nullable=False),
    sa.Column("tokens_after", sa.Integer, nullable=False),
    sa.Column("summary_tokens", sa.Integer, nullable=False),
    sa.Column("budget", sa.Integer, nullable=False),
    sa.Column("summarizer_model", sa.String(200)),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("summarizer_prompt_tokens", sa.Integer),
    sa.Column("summarizer_completion_tokens", sa.Integer),
    sa.Column("usage_source", sa.String(16)),
    sa.Column("resummarized", sa.Boolean, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("fallback_reason", sa.Text),
)

#: Text of a conversation not in its messages yet, one row of each kind: "reply", the reply
#: streaming now (saved every few seconds, recovered as an interrupted reply after a crash);
#: "message", what a stale tab's visitor wrote that could not be saved (offered back on opening).
drafts = sa.Table(
    "drafts",
    metadata,
    _parent(),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
REPLY_DRAFT: Final = "reply"
MESSAGE_DRAFT: Final = "message"

_CHILD_TABLES: Final = (messages, turns, trim_events, summary_versions, summary_events, drafts)

#: Comparisons (core/compare/comparison.py), each as its export record: the columns' conversations with their
#: labels, figures, the messages sent and the picks.
comparisons = sa.Table(
    "comparisons",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", OWNER_TYPE, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_comparisons_owner_updated_at", "owner", "updated_at"),
)

#: Test sets (core/compare/testsets.py): an owner's named lists of prompts, as JSON.
test_sets = sa.Table(
    "test_sets",
    metadata,
    sa.Column("owner", OWNER_TYPE, primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("prompts", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

#: Runs of a test set, each as its record (`TestRunRecord`: every prompt's answer per column, with
#: its figures and the votes cast on them).
test_runs = sa.Table(
    "test_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", OWNER_TYPE, nullable=False),
    sa.Column("test_set", sa.String(200), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_test_runs_owner_test_set_created_at", "owner", "test_set", "created_at"),
)

#: Personas an owner created or imported in the app, as the YAML text of a persona file.
personas = sa.Table(
    "personas",
    metadata,
    sa.Column("owner", OWNER_TYPE, primary_key=True),
    sa.Column("persona_id", sa.String(64), primary_key=True),
    sa.Column("yaml", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


# --- what callers hold ---------------------------------------------------------------------


def new_conversation_id() -> str:
    """A conversation's id, given when it is started and kept when it is first saved."""
    return uuid4().hex


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the conversation list."""

    id: str
    owner: str
    persona_id: str | None
    #: Empty until the first user message when the title is automatic (see `display_title`).
    title: str
    title_is_auto: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    message_count: int
    #: In a search, the words around the first match in its messages (None: the title matched,
    #: or no search).
    match: str | None = None

    @property
    def display_title(self) -> str:
        return self.title or "New conversation"


#: How many characters of a message a search result shows around the match.
SNIPPET_CHARS: Final = 80


def match_snippet(text: str, needle: str, width: int = SNIPPET_CHARS) -> str:
    """The words of `text` around the first case-insensitive occurrence of `needle`, on one line,
    with an ellipsis where it was cut."""
    flat = " ".join(text.split())
    at = max(flat.casefold().find(needle.casefold()), 0)
    start = max(0, min(at - width // 3, len(flat) - width))
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


@dataclass(frozen=True)
class StoredConversation:
    """What the session keeps for a saved conversation: its id, the version it last saw, and how
    much of it is already saved, so the next save writes only the rest."""

    id: str
    version: int
    saved_messages: int
    saved_turns: int
    saved_trim_events: int
    #: The settings as last saved (JSON), to tell whether they changed.
    settings_json: str
    #: True while the title is automatic and no user message has given it one yet.
    title_pending: bool
    saved_summary_versions: int = 0
    saved_summary_events: int = 0
    #: A draft of the reply in progress is in the store (the next save without one removes it).
    reply_draft_saved: bool = False
    #: What the visitor wrote in a stale tab that could not be saved, to offer back (`MESSAGE_DRAFT`).
    unsent_text: str | None = None


# --- the store -----------------------------------------------------------------------------


class Store:
    """Conversations in one database; safe to share between threads (and between processes and
    replicas: every save checks the version it expects)."""

    def __init__(self, url: str | URL, *, echo: bool = False, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S):
        """Open the database at `url` and upgrade its schema to the newest migration."""
        try:
            self._url = make_url(url)
        except sa_exc.ArgumentError:
            raise StoreError(f"{redact_url(str(url))!r} is not a database URL.").coded(
                "store_bad_url", url=redact_url(str(url))
            ) from None
        self._backend = self._url.get_backend_name()
        self._writes = 0
        self._writes_lock = threading.Lock()
        if self._backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"Only SQLite and PostgreSQL databases are supported, not {self._backend!r}."
            ).coded("store_kind", kind=self._backend)
        self._path = sqlite_path(self._url)
        self.where = str(self._path) if self._path else describe_url(self._url)
        self._read_only = self._url.query.get("mode") == "ro"
        if self._path is not None:
            self._check_sqlite_file(self._path)
            if not self._read_only and not _writable(self._path):
                self._url, self._read_only = _read_only_sqlite_url(self._path), True
        try:
            self.engine = self._create_engine(echo=echo, busy_timeout_s=busy_timeout_s)
        except sa_exc.ArgumentError as exc:
            raise StoreError(f"The database URL for {self.where} is not usable: {exc}").coded(
                "store_url_unusable", where=self.where, reason=str(exc)
            ) from None
        except ModuleNotFoundError as exc:
            raise StoreError(f"The database driver for {self.where} is not installed: {exc.name}.").coded(
                "store_driver_missing", where=self.where, driver=exc.name
            ) from None
        try:
            self._open()
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], default_path: Path = DEFAULT_PATH) -> Store:
        """The database DATABASE_URL names, else SQLite in the folder DATA_DIR names when it exists
        (a Hugging Face Space's persistent storage is mounted at /data only when enabled), else at
        `default_path` (its folder is created)."""
        url = environ.get("DATABASE_URL", "").strip()
        if not url:
            data_dir = Path(environ.get("DATA_DIR", "").strip() or default_path.parent)
            path = data_dir / default_path.name if data_dir.is_dir() else default_path
            return cls(URL.create("sqlite", database=str(path)))
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError:
            raise ConfigError(
                "DATABASE_URL",
                f"DATABASE_URL ({redact_url(url)}) is not a database URL; expected e.g. "
                "sqlite:////path/to/dashboard.db or postgresql+psycopg://user:password@host/dbname.",
            ).coded("config_database_url", url=redact_url(url)) from None
        if parsed.drivername in ("postgres", "postgresql"):  # the psycopg (3) driver is the one installed
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                "DATABASE_URL",
                f"DATABASE_URL ({describe_url(parsed)}) names a {parsed.get_backend_name()} database; "
                "only sqlite:/// and postgresql+psycopg:// URLs are supported.",
            ).coded("config_database_kind", url=describe_url(parsed), kind=parsed.get_backend_name())
        return cls(parsed)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.where!r})"

    # --- writing -----------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        conversation: Conversation,
        *,
        title: str | None = None,
        conversation_id: str | None = None,
    ) -> StoredConversation:
        """Save a new conversation (all of it: a fresh one or an imported file); its handle.
        `conversation_id`: the id it was given when it was started (`new_conversation_id`)."""
        _check_owner(owner)
        title = _clean_title(title or "")
        title_is_auto = not title
        title = title or _auto_title(conversation.messages)
        conversation_id = conversation_id or new_conversation_id()
        settings_json = conversation.settings.model_dump_json()
        now = _utcnow()
        changed = conversation.pop_changed_message_ids()  # everything is written as it stands
        try:
            with self._write("saving the conversation") as conn:
                conn.execute(
                    conversations.insert().values(
                        id=conversation_id,
                        owner=owner,
                        persona_id=conversation.persona_id,
                        title=title,
                        title_is_auto=title_is_auto,
                        settings=settings_json,
                        version=1,
                        message_count=len(conversation.messages),
                        created_at=now,
                        updated_at=now,
                    )
                )
                self._insert_new(conn, conversation_id, conversation, 0, 0, 0, 0, 0)
        except BaseException:
            _give_back_changes(conversation, changed)
            raise
        return StoredConversation(
            id=conversation_id,
            version=1,
            saved_messages=len(conversation.messages),
            saved_turns=len(conversation.turns),
            saved_trim_events=len(conversation.trim_events),
            settings_json=settings_json,
            title_pending=title_is_auto and not title,
            saved_summary_versions=len(conversation.summary_versions),
            saved_summary_events=len(conversation.summary_events),
        )

    def save(
        self,
        owner: str,
        handle: StoredConversation,
        conversation: Conversation,
        *,
        reply_draft: str | None = None,
    ) -> StoredConversation:
        """Write what changed since `handle` in one transaction; the new handle.

        `reply_draft`: the text so far of a reply still streaming, kept as the conversation's
        reply draft (`load` recovers it as an interrupted reply); a save without one removes a
        draft saved before (the reply has ended, and is in the messages if it had any text).

        Raises StaleConversation (writing nothing) when the conversation was saved elsewhere since.
        """
        _check_owner(owner)
        counts = (
            len(conversation.messages),
            len(conversation.turns),
            len(conversation.trim_events),
            len(conversation.summary_versions),
            len(conversation.summary_events),
        )
        saved = (
            handle.saved_messages,
            handle.saved_turns,
            handle.saved_trim_events,
            handle.saved_summary_versions,
            handle.saved_summary_events,
        )
        if any(now < then for now, then in zip(counts, saved, strict=True)):
            raise StoreError(
                f"This conversation holds less than the saved conversation {handle.id!r}; "
                "it is not the one this handle was made for."
            )
        new_messages = conversation.messages[handle.saved_messages :]
        changed = conversation.pop_changed_message_ids()
        try:
            new_ids = {message.id for message in new_messages}
            rewrite = [_message_or_none(conversation, i) for i in sorted(changed - new_ids)]
            settings_json = conversation.settings.model_dump_json()
            auto_title = _auto_title(new_messages) if handle.title_pending else None
            version = handle.version + 1
            values: dict[str, Any] = {
                "version": version,
                "updated_at": _utcnow(),
                "message_count": len(conversation.messages),
                "persona_id": conversation.persona_id,
            }
            if settings_json != handle.settings_json:
                values["settings"] = settings_json
            if auto_title:
                # A rename made elsewhere since does not bump the version; it wins over the automatic title.
                values["title"] = sa.case(
                    (conversations.c.title_is_auto, auto_title), else_=conversations.c.title
                )
            with self._write("saving the conversation") as conn:
                result = conn.execute(
                    conversations.update()
                    .where(
                        conversations.c.id == handle.id,
                        conversations.c.owner == owner,
                        conversations.c.version == handle.version,
                    )
                    .values(**values)
                )
                if result.rowcount != 1:
                    found = conn.execute(
                        sa.select(conversations.c.version).where(
                            conversations.c.id == handle.id, conversations.c.owner == owner
                        )
                    ).scalar_one_or_none()
                    if found is None:
                        raise ConversationNotFound(handle.id)
                    raise StaleConversation(handle.id, handle.version, found)
                self._insert_new(
                    conn,
                    handle.id,
                    conversation,
                    handle.saved_messages,
                    handle.saved_turns,
                    handle.saved_trim_events,
                    handle.saved_summary_versions,
                    handle.saved_summary_events,
                )
                rows = [
                    {
                        "b_cid": handle.id,
                        "b_mid": message.id,
                        "b_state": message.state.value,
                        "b_tokens": message.tokens,
                        "b_pinned": message.pinned,
                    }
                    for message in rewrite
                    if message is not None
                ]
                if rows:
                    conn.execute(_REWRITE_MESSAGE, rows)
                if reply_draft:
                    _put_draft(conn, handle.id, REPLY_DRAFT, reply_draft)
                elif handle.reply_draft_saved:
                    conn.execute(drafts.delete().where(_draft_of(handle.id, REPLY_DRAFT)))
        except BaseException:
            _give_back_changes(conversation, changed)
            raise
        return replace(
            handle,
            version=version,
            saved_messages=counts[0],
            saved_turns=counts[1],
            saved_trim_events=counts[2],
            saved_summary_versions=counts[3],
            saved_summary_events=counts[4],
            settings_json=settings_json,
            title_pending=handle.title_pending and not auto_title,
            reply_draft_saved=bool(reply_draft),
        )

    def rename(self, owner: str, conversation_id: str, title: str) -> None:
        """Give the conversation this title (no longer automatic)."""
        title = _clean_title(title)
        if not title:
            raise InvalidTitle("A title cannot be empty.").coded("title_empty")
        self._update_one(
            owner, conversation_id, "renaming the conversation", title=title, title_is_auto=False
        )

    def delete(self, owner: str, conversation_id: str) -> None:
        """Move the conversation to the trash (`restore` brings it back; `purge_deleted` removes it)."""
        self._update_one(
            owner,
            conversation_id,
            "deleting the conversation",
            deleted_at=sa.func.coalesce(conversations.c.deleted_at, _utcnow()),
        )

    def restore(self, owner: str, conversation_id: str) -> None:
        """Take the conversation out of the trash."""
        self._update_one(owner, conversation_id, "restoring the conversation", deleted_at=None)

    def purge_deleted(self, owner: str, older_than: timedelta | datetime) -> int:
        """Remove for good this owner's conversations deleted before `older_than` (an age or a
        time); how many were removed."""
        _check_owner(owner)
        cutoff = _utcnow() - older_than if isinstance(older_than, timedelta) else older_than
        doomed = (
            sa.select(conversations.c.id)
            .where(
                conversations.c.owner == owner,
                conversations.c.deleted_at.is_not(None),
                conversations.c.deleted_at < cutoff,
            )
            .scalar_subquery()
        )
        with self._write("removing deleted conversations") as conn:
            for table in _CHILD_TABLES:
                conn.execute(table.delete().where(table.c.conversation_id.in_(doomed)))
            result = conn.execute(
                conversations.delete().where(conversations.c.owner == owner, conversations.c.id.in_(doomed))
            )
        return int(result.rowcount)

    # --- reading -----------------------------------------------------------------------------

    def load(self, owner: str, conversation_id: str) -> tuple[Conversation, StoredConversation]:
        """The saved conversation (deleted or not) and its handle; seven queries whatever its length.

        A reply draft left by a save that never came (the server stopped mid-reply) is recovered
        as the pending question's reply, marked interrupted; the next save writes it."""
        _check_owner(owner)
        with self._read("loading the conversation") as conn:
            row = conn.execute(
                sa.select(conversations).where(
                    conversations.c.id == conversation_id, conversations.c.owner == owner
                )
            ).one_or_none()
            if row is None:
                raise ConversationNotFound(conversation_id)
            message_rows = conn.execute(
                sa.select(messages)
                .where(messages.c.conversation_id == conversation_id)
                .order_by(messages.c.position)
            ).all()
            turn_rows = conn.execute(
                sa.select(turns).where(turns.c.conversation_id == conversation_id).order_by(turns.c.number)
            ).all()
            trim_rows = conn.execute(
                sa.select(trim_events)
                .where(trim_events.c.conversation_id == conversation_id)
                .order_by(trim_events.c.seq)
            ).all()
            version_rows = conn.execute(
                sa.select(summary_versions)
                .where(summary_versions.c.conversation_id == conversation_id)
                .order_by(summary_versions.c.seq)
            ).all()
            summary_rows = conn.execute(
                sa.select(summary_events)
                .where(summary_events.c.conversation_id == conversation_id)
                .order_by(summary_events.c.seq)
            ).all()
            draft_rows = conn.execute(
                sa.select(drafts.c.kind, drafts.c.content).where(drafts.c.conversation_id == conversation_id)
            ).all()
        kept: dict[str, str] = {row.kind: row.content for row in draft_rows}
        reply_draft = kept.get(REPLY_DRAFT)
        record = {
            "version": 2,
            "persona_id": row.persona_id,
            "settings": json.loads(row.settings),
            "messages": [
                {
                    "id": m.message_id,
                    "created_at": m.created_at,
                    "role": m.role,
                    "content": m.content,
                    "state": m.state,
                    "pinned": m.pinned,
                    "interrupted": m.interrupted,
                    "cut_off": m.cut_off,
                    "automatic": m.automatic,
                }
                for m in message_rows
            ],
            "turns": [{k: v for k, v in t._mapping.items() if k != "conversation_id"} for t in turn_rows],
            "trim_events": [
                {
                    "turn": e.turn,
                    "dropped": json.loads(e.dropped),
                    "tokens_before": e.tokens_before,
                    "tokens_after": e.tokens_after,
                    "budget": e.budget,
                }
                for e in trim_rows
            ],
            "summary_versions": [
                {k: v for k, v in r._mapping.items() if k not in ("conversation_id", "seq")}
                for r in version_rows
            ],
            "summary_events": [
                {
                    **{k: v for k, v in r._mapping.items() if k not in ("conversation_id", "seq")},
                    "folded": json.loads(r.folded),
                    "dropped": json.loads(r.dropped),
                }
                for r in summary_rows
            ],
        }
        try:
            conversation = Conversation.from_dict(record)  # validates, and recounts tokens
        except ConversationImportError as exc:
            raise StoreError(f"Saved conversation {conversation_id!r} cannot be rebuilt: {exc}").coded(
                "conversation_unreadable", id=conversation_id
            ) from None
        if reply_draft and conversation.pending_user_message is not None:
            conversation.add_assistant(reply_draft, None, interrupted=True)
        handle = StoredConversation(
            id=conversation_id,
            version=row.version,
            saved_messages=len(message_rows),
            saved_turns=len(turn_rows),
            saved_trim_events=len(trim_rows),
            settings_json=row.settings,
            title_pending=row.title_is_auto and not row.title,
            saved_summary_versions=len(version_rows),
            saved_summary_events=len(summary_rows),
            reply_draft_saved=reply_draft is not None,
            unsent_text=kept.get(MESSAGE_DRAFT),
        )
        return conversation, handle

    def keep_draft(self, owner: str, conversation_id: str, kind: str, text: str) -> None:
        """Keep `text` as the conversation's draft of this kind (replacing one kept before)."""
        _check_owner(owner)
        with self._write("saving the conversation") as conn:
            self._check_owned(conn, owner, conversation_id)
            conn.execute(drafts.delete().where(_draft_of(conversation_id, kind)))
            conn.execute(
                drafts.insert().values(
                    conversation_id=conversation_id, kind=kind, content=text, updated_at=_utcnow()
                )
            )

    def drop_draft(self, owner: str, conversation_id: str, kind: str) -> None:
        """Forget the conversation's draft of this kind, if it has one."""
        _check_owner(owner)
        with self._write("saving the conversation") as conn:
            self._check_owned(conn, owner, conversation_id)
            conn.execute(drafts.delete().where(_draft_of(conversation_id, kind)))

    @staticmethod
    def _check_owned(conn: Connection, owner: str, conversation_id: str) -> None:
        owned = sa.select(conversations.c.id).where(
            conversations.c.id == conversation_id, conversations.c.owner == owner
        )
        if conn.execute(owned).scalar_one_or_none() is None:
            raise ConversationNotFound(conversation_id)

    def list(
        self,
        owner: str,
        *,
        persona_id: str | None = None,
        search: str | None = None,
        include_deleted: bool = False,
        limit: int = 200,
    ) -> builtins.list[ConversationSummary]:
        """This owner's conversations, most recently saved first.

        `search` matches titles and message text, case-insensitively (ASCII letters only on SQLite),
        with % and _ taken literally.
        """
        _check_owner(owner)
        c = conversations.c
        needle = (search or "").strip()
        first_match: sa.ScalarSelect[str] | sa.Null = sa.null()
        if needle:
            first_match = (
                sa.select(messages.c.content)
                .where(
                    messages.c.conversation_id == c.id, messages.c.content.icontains(needle, autoescape=True)
                )
                .order_by(messages.c.position)
                .limit(1)
                .scalar_subquery()
            )
        query = sa.select(conversations, first_match.label("first_match")).where(c.owner == owner)
        if persona_id is not None:
            query = query.where(c.persona_id == persona_id)
        if not include_deleted:
            query = query.where(c.deleted_at.is_(None))
        if needle:
            in_messages = (
                sa.select(messages.c.message_id)
                .where(
                    messages.c.conversation_id == c.id, messages.c.content.icontains(needle, autoescape=True)
                )
                .exists()
            )
            query = query.where(sa.or_(c.title.icontains(needle, autoescape=True), in_messages))
        query = query.order_by(c.updated_at.desc(), c.id.desc()).limit(max(0, limit))
        with self._read("listing conversations") as conn:
            rows = conn.execute(query).all()
        return [
            ConversationSummary(
                id=r.id,
                owner=r.owner,
                persona_id=r.persona_id,
                title=r.title,
                title_is_auto=r.title_is_auto,
                created_at=r.created_at,
                updated_at=r.updated_at,
                deleted_at=r.deleted_at,
                message_count=r.message_count,
                match=(
                    match_snippet(r.first_match, needle)
                    if r.first_match is not None and needle.casefold() not in r.title.casefold()
                    else None
                ),
            )
            for r in rows
        ]

    # --- personas ----------------------------------------------------------------------------

    def save_persona(self, owner: str, persona_id: str, yaml_text: str) -> None:
        """Create or replace one of this owner's personas (the caller has checked the YAML)."""
        _check_owner(owner)
        now = _utcnow()
        with self._write("saving the persona") as conn:
            updated = conn.execute(
                personas.update()
                .where(personas.c.owner == owner, personas.c.persona_id == persona_id)
                .values(yaml=yaml_text, updated_at=now)
            )
            if updated.rowcount == 0:
                conn.execute(
                    personas.insert().values(
                        owner=owner, persona_id=persona_id, yaml=yaml_text, created_at=now, updated_at=now
                    )
                )

    def list_personas(self, owner: str, limit: int | None = None) -> builtins.list[tuple[str, str]]:
        """This owner's personas as (id, YAML text), oldest first; at most `limit` of them."""
        _check_owner(owner)
        query = (
            sa.select(personas.c.persona_id, personas.c.yaml)
            .where(personas.c.owner == owner)
            .order_by(personas.c.created_at, personas.c.persona_id)
            .limit(limit)
        )
        with self._read("listing personas") as conn:
            return [(row.persona_id, row.yaml) for row in conn.execute(query)]

    def delete_persona(self, owner: str, persona_id: str) -> None:
        _check_owner(owner)
        with self._write("deleting the persona") as conn:
            conn.execute(
                personas.delete().where(personas.c.owner == owner, personas.c.persona_id == persona_id)
            )

    # --- comparisons -------------------------------------------------------------------------

    def save_comparison(self, owner: str, comparison_id: str | None, title: str, record: str) -> str:
        """Create (no id) or replace one of this owner's comparisons; its id."""
        _check_owner(owner)
        now = _utcnow()
        with self._write("saving the comparison") as conn:
            if comparison_id is not None:
                updated = conn.execute(
                    comparisons.update()
                    .where(comparisons.c.owner == owner, comparisons.c.id == comparison_id)
                    .values(title=title, record=record, updated_at=now)
                )
                if updated.rowcount == 0:
                    raise StoreError(f"There is no saved comparison {comparison_id!r}.").coded(
                        "comparison_not_found", id=comparison_id
                    )
                return comparison_id
            comparison_id = uuid4().hex
            conn.execute(
                comparisons.insert().values(
                    id=comparison_id, owner=owner, title=title, record=record, created_at=now, updated_at=now
                )
            )
        return comparison_id

    def list_comparisons(self, owner: str, *, limit: int = 50) -> builtins.list[tuple[str, str]]:
        """This owner's comparisons as (id, title), most recently saved first."""
        _check_owner(owner)
        c = comparisons.c
        query = sa.select(c.id, c.title).where(c.owner == owner).order_by(c.updated_at.desc()).limit(limit)
        with self._read("listing comparisons") as conn:
            return [(row.id, row.title) for row in conn.execute(query)]

    def load_comparison(self, owner: str, comparison_id: str) -> str:
        """The record of one of this owner's comparisons (JSON text)."""
        _check_owner(owner)
        c = comparisons.c
        query = sa.select(c.record).where(c.owner == owner, c.id == comparison_id)
        with self._read("loading the comparison") as conn:
            record = conn.execute(query).scalar_one_or_none()
        if record is None:
            raise StoreError(f"There is no saved comparison {comparison_id!r}.").coded(
                "comparison_not_found", id=comparison_id
            )
        return str(record)

    def comparison_records(self, owner: str) -> builtins.list[str]:
        """Every comparison record of this owner (for the tally of blind picks)."""
        _check_owner(owner)
        query = sa.select(comparisons.c.record).where(comparisons.c.owner == owner)
        with self._read("reading comparisons") as conn:
            return [str(record) for record in conn.execute(query).scalars()]

    # --- test sets -----------------------------------------------------------------------------

    def save_test_set(self, owner: str, name: str, prompts: str) -> None:
        """Create or replace this owner's test set `name` (its prompts as JSON)."""
        _check_owner(owner)
        values = {"prompts": prompts, "updated_at": _utcnow()}
        with self._write("saving the test set") as conn:
            updated = conn.execute(
                test_sets.update()
                .where(test_sets.c.owner == owner, test_sets.c.name == name)
                .values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(test_sets.insert().values(owner=owner, name=name, **values))

    def list_test_sets(self, owner: str) -> builtins.list[tuple[str, str]]:
        """This owner's test sets as (name, prompts JSON), most recently saved first."""
        _check_owner(owner)
        c = test_sets.c
        query = sa.select(c.name, c.prompts).where(c.owner == owner).order_by(c.updated_at.desc())
        with self._read("listing test sets") as conn:
            return [(row.name, row.prompts) for row in conn.execute(query)]

    def save_test_run(self, owner: str, run_id: str, test_set: str, record: str) -> None:
        """Create or replace one run of a test set (replaced when a vote is cast on it)."""
        _check_owner(owner)
        with self._write("saving the test run") as conn:
            updated = conn.execute(
                test_runs.update()
                .where(test_runs.c.owner == owner, test_runs.c.id == run_id)
                .values(record=record)
            )
            if updated.rowcount == 0:
                conn.execute(
                    test_runs.insert().values(
                        id=run_id, owner=owner, test_set=test_set, record=record, created_at=_utcnow()
                    )
                )

    def test_run_records(
        self, owner: str, test_set: str | None = None, *, limit: int = 200
    ) -> builtins.list[str]:
        """This owner's test runs (of `test_set`, or all), newest first, as JSON records."""
        _check_owner(owner)
        c = test_runs.c
        query = sa.select(c.record).where(c.owner == owner)
        if test_set is not None:
            query = query.where(c.test_set == test_set)
        query = query.order_by(c.created_at.desc()).limit(limit)
        with self._read("reading test runs") as conn:
            return [str(record) for record in conn.execute(query).scalars()]

    def conversation_counts(self, owner: str) -> dict[str, int]:
        """How many (not deleted) conversations this owner has per persona id."""
        _check_owner(owner)
        c = conversations.c
        query = (
            sa.select(c.persona_id, sa.func.count())
            .where(c.owner == owner, c.deleted_at.is_(None), c.persona_id.is_not(None))
            .group_by(c.persona_id)
        )
        with self._read("counting conversations") as conn:
            return {str(persona_id): int(count) for persona_id, count in conn.execute(query)}

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self._read("reading the schema version") as conn:
            return _current_revision(conn)

    # --- internals ---------------------------------------------------------------------------

    def _insert_new(
        self,
        conn: Connection,
        conversation_id: str,
        conversation: Conversation,
        saved_messages: int,
        saved_turns: int,
        saved_trim_events: int,
        saved_summary_versions: int,
        saved_summary_events: int,
    ) -> None:
        new_messages = conversation.messages[saved_messages:]
        if new_messages:
            conn.execute(
                messages.insert(),
                [
                    _message_row(conversation_id, position, message)
                    for position, message in enumerate(new_messages, start=saved_messages)
                ],
            )
        new_turns = conversation.turns[saved_turns:]
        if new_turns:
            conn.execute(
                turns.insert(),
                [{"conversation_id": conversation_id, **turn.model_dump()} for turn in new_turns],
            )
        new_trims = conversation.trim_events[saved_trim_events:]
        if new_trims:
            conn.execute(
                trim_events.insert(),
                [
                    {
                        "conversation_id": conversation_id,
                        "seq": seq,
                        "turn": trim.turn,
                        "dropped": json.dumps(trim.dropped),
                        "tokens_before": trim.tokens_before,
                        "tokens_after": trim.tokens_after,
                        "budget": trim.budget,
                    }
                    for seq, trim in enumerate(new_trims, start=saved_trim_events)
                ],
            )
        new_versions = conversation.summary_versions[saved_summary_versions:]
        if new_versions:
            conn.execute(
                summary_versions.insert(),
                [
                    {"conversation_id": conversation_id, "seq": seq, **version.model_dump()}
                    for seq, version in enumerate(new_versions, start=saved_summary_versions)
                ],
            )
        new_summary_events = conversation.summary_events[saved_summary_events:]
        if new_summary_events:
            conn.execute(
                summary_events.insert(),
                [
                    {
                        "conversation_id": conversation_id,
                        "seq": seq,
                        **summary.model_dump(exclude={"folded", "dropped"}),
                        "folded": json.dumps(summary.folded),
                        "dropped": json.dumps(summary.dropped),
                    }
                    for seq, summary in enumerate(new_summary_events, start=saved_summary_events)
                ],
            )

    def _update_one(self, owner: str, conversation_id: str, action: str, **values: Any) -> None:
        _check_owner(owner)
        with self._write(action) as conn:
            result = conn.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, conversations.c.owner == owner)
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConversationNotFound(conversation_id)

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._translate_errors(action), self.engine.connect() as conn:
            if self._backend == "postgresql":
                # One snapshot for the several queries of a load.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @property
    def writes(self) -> int:
        """How many writes this object has made (counted once each is over, committed or not):
        what a reader read stays current until it changes, except for another process's writes."""
        return self._writes

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        try:
            with self._translate_errors(action), self.engine.connect() as conn:
                # SQLite: take the write lock at BEGIN (waiting up to busy_timeout), never halfway through.
                conn = conn.execution_options(sqlite_begin_immediate=True)
                with conn.begin():
                    yield conn
        finally:
            with self._writes_lock:
                self._writes += 1

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sa_exc.DBAPIError as exc:
            raise self._translated(exc, action) from exc
        except sa_exc.TimeoutError:
            raise StoreUnavailable(
                f"The database {self.where} is busy: no connection was free in time ({action}).",
                where=self.where,
            ).coded("store_busy", where=self.where) from None

    def _translated(self, exc: sa_exc.DBAPIError, action: str) -> StoreError:
        """A clear error for a driver's error (never with the SQL, its parameters or a password)."""
        orig = exc.orig
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if self._url.password:
            reason = reason.replace(self._url.password, "***")
        where = self.where
        if isinstance(orig, sqlite3.Error):
            code = getattr(orig, "sqlite_errorname", "")
            if code.startswith("SQLITE_READONLY"):
                return StoreUnavailable(
                    f"The database {where} is read-only: saved conversations can be read, but {action} "
                    "failed. Check the file's and its folder's permissions.",
                    where=where,
                ).coded("store_read_only_file", where=where)
            if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                return StoreUnavailable(
                    f"The database {where} is locked by another process; {action} failed. "
                    "Try again in a moment.",
                    where=where,
                ).coded("store_locked", where=where)
            if code.startswith("SQLITE_FULL"):
                return StoreUnavailable(
                    f"The database {where} is full (no disk space left, or its size limit); {action} failed.",
                    where=where,
                ).coded("store_full", where=where)
            if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                return NotADatabase(
                    f"{where} is not a readable SQLite database ({reason}); it was left untouched. "
                    "Move it aside or point DATABASE_URL elsewhere.",
                    where=where,
                ).coded("store_not_sqlite", where=where)
            if code.startswith(
                ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_AUTH")
            ) or isinstance(orig, sqlite3.OperationalError):
                return StoreUnavailable(
                    f"The database {where} cannot be used ({reason}); {action} failed. "
                    "Check that its folder exists and is writable.",
                    where=where,
                ).coded("store_cannot_open", where=where, reason=reason)
            return StoreError(f"The database {where} refused {action}: {reason}.").coded(
                "store_refused", where=where, reason=reason
            )
        sqlstate = getattr(orig, "sqlstate", None) or ""
        if sqlstate == "25006":  # read_only_sql_transaction: a standby, or a read-only default
            return StoreUnavailable(
                f"The database {where} is read-only: saved conversations can be read, but {action} failed.",
                where=where,
            ).coded("store_read_only", where=where)
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or sqlstate.startswith(
            ("08", "53", "57")
        ):
            return StoreUnavailable(
                f"The database {where} is unavailable ({reason}); {action} failed.", where=where
            ).coded("store_unavailable", where=where, reason=reason)
        return StoreError(f"The database {where} refused {action}: {reason}.").coded(
            "store_refused", where=where, reason=reason
        )

    def _create_engine(self, *, echo: bool, busy_timeout_s: float) -> Engine:
        if self._backend == "postgresql":
            return sa.create_engine(
                self._url, echo=echo, pool_pre_ping=True, connect_args={"connect_timeout": 10}
            )
        engine = sa.create_engine(self._url, echo=echo, connect_args={"check_same_thread": False})
        busy_ms = max(0, int(busy_timeout_s * 1000))

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, say where transactions begin (see on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("sqlite_begin_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _check_sqlite_file(self, path: Path) -> None:
        """Refuse what is not a SQLite file before SQLite touches it; create a new file's folder."""
        try:
            if path.is_dir():
                raise NotADatabase(f"{path} is a folder, not a database file.", where=str(path)).coded(
                    "store_folder", where=str(path)
                )
            if path.exists():
                with path.open("rb") as file:
                    header = file.read(len(_SQLITE_HEADER))
                if header and header != _SQLITE_HEADER:  # an empty file is a new database
                    raise NotADatabase(
                        f"{path} is not a SQLite database (it may be corrupted, or another kind of file); "
                        "it was left untouched. Move it aside or point DATABASE_URL elsewhere.",
                        where=str(path),
                    ).coded("store_not_sqlite", where=str(path))
            elif not self._read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"The database {path} cannot be used: {exc.strerror or exc}.", where=str(path)
            ).coded("store_cannot_open", where=str(path), reason=str(exc.strerror or exc)) from None

    def _open(self) -> None:
        """Check the database is this app's (or empty), and upgrade its schema to head."""
        config = alembic_config(self._url)
        head = ScriptDirectory.from_config(config).get_current_head()
        with self._read("opening the database") as conn:
            current = self._checked_revision(conn, config)
        if current != head:
            with self._write("upgrading the database schema") as conn:
                if self._backend == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                if self._checked_revision(conn, config) != head:  # another process may have done it
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
        if self._path is not None and not self._read_only:
            self._use_wal()

    def _checked_revision(self, conn: Connection, config: Config) -> str | None:
        tables = set(sa.inspect(conn).get_table_names())
        if not tables:
            return None
        if "alembic_version" not in tables:
            raise NotADatabase(
                f"The database {self.where} holds another application's tables "
                f"({', '.join(sorted(tables)[:5])}); it was left untouched. "
                "Use a database of its own for the dashboard.",
                where=self.where,
            ).coded("store_foreign_tables", where=self.where, tables=", ".join(sorted(tables)[:5]))
        current = _current_revision(conn)
        if current is not None:
            try:
                known = ScriptDirectory.from_config(config).get_revision(current) is not None
            except Exception:
                known = False
            if not known:
                raise NotADatabase(
                    f"The database {self.where} has a schema this version of the app does not know "
                    f"(revision {current!r}): another application's, or a newer version's. "
                    "It was left untouched.",
                    where=self.where,
                ).coded("store_unknown_schema", where=self.where, revision=current)
        elif tables - {"alembic_version"}:
            raise NotADatabase(
                f"The database {self.where} holds tables with no schema version; it was left untouched.",
                where=self.where,
            ).coded("store_unversioned", where=self.where)
        return current

    def _use_wal(self) -> None:
        """Write-ahead logging, so readers never wait for a writer (a setting kept in the file)."""
        raw = self.engine.raw_connection()  # outside any transaction: the mode cannot change inside one
        try:
            cursor = raw.cursor()
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if not mode or str(mode[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.close()
        except sqlite3.Error:
            pass  # read-only or busy: readers still work, and writes will say why they fail
        finally:
            raw.close()


_REWRITE_MESSAGE: Final = (
    messages.update()
    .where(
        messages.c.conversation_id == sa.bindparam("b_cid"), messages.c.message_id == sa.bindparam("b_mid")
    )
    .values(state=sa.bindparam("b_state"), tokens=sa.bindparam("b_tokens"), pinned=sa.bindparam("b_pinned"))
)


def alembic_config(url: URL | str | None = None) -> Config:
    """Alembic's configuration for the migrations in core/store/migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "%%(rev)s")  # revision 0002_x is versions/0002_x.py
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def _writable(path: Path) -> bool:
    """Whether SQLite can write this (existing) file: the file, and its folder for the journal."""
    return not path.exists() or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))


def _read_only_sqlite_url(path: Path) -> URL:
    """A URL that opens `path` read-only. A WAL database needs its -shm file to be read; when that
    cannot be created (a folder we cannot write) and no writer is active (no -wal file), the file
    is opened as immutable, which needs none."""
    query = {"uri": "true", "mode": "ro"}
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists():
        query["immutable"] = "1"
    return URL.create("sqlite", database="file:" + quote(str(path)), query=query)


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL names (None for an in-memory database, or another backend)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if url.query.get("uri") == "true" and database.startswith("file:"):
        database = unquote(database.removeprefix("file:"))
        if database.startswith("//"):  # file://host/path: host must be empty or localhost
            database = "/" + database[2:].partition("/")[2]
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return None
    return Path(database).absolute()


def describe_url(url: URL) -> str:
    """The URL without credentials or query (user:password@ becomes ***@)."""
    bare = URL.create(url.drivername, host=url.host, port=url.port, database=url.database)
    text = bare.render_as_string(hide_password=False)
    if url.username or url.password:
        text = text.replace("://", "://***@", 1)
    return text


def redact_url(text: str) -> str:
    """`text` with any user:password@ in a URL replaced by ***@."""
    return re.sub(r"(?<=://)[^/@\s]*@", "***@", text)


def _current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    return str(versions[0]) if len(versions) == 1 else None


def _message_row(conversation_id: str, position: int, message: Message) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "message_id": message.id,
        "position": position,
        "role": message.role,
        "content": message.content,
        "state": message.state.value,
        "tokens": message.tokens,
        "pinned": message.pinned,
        "interrupted": message.interrupted,
        "cut_off": message.cut_off,
        "automatic": message.automatic,
        "created_at": message.created_at,
    }


def _put_draft(conn: Connection, conversation_id: str, kind: str, text: str) -> None:
    """The conversation's draft of this kind is `text` (the one before replaced)."""
    conn.execute(drafts.delete().where(_draft_of(conversation_id, kind)))
    conn.execute(
        drafts.insert().values(conversation_id=conversation_id, kind=kind, content=text, updated_at=_utcnow())
    )


def _draft_of(conversation_id: str, kind: str) -> sa.ColumnElement[bool]:
    return sa.and_(drafts.c.conversation_id == conversation_id, drafts.c.kind == kind)


def _message_or_none(conversation: Conversation, message_id: str) -> Message | None:
    try:
        return conversation.message(message_id)
    except ConversationStateError:
        return None


def _give_back_changes(conversation: Conversation, changed: set[str]) -> None:
    """A save that failed leaves the changed messages marked, so the next attempt rewrites them."""
    if changed:
        # Conversation offers pop only; put the ids back so a retried save loses nothing.
        conversation._changed_ids |= changed


def _auto_title(candidates: Sequence[Message]) -> str:
    """The first user-written message's preview, or "" when there is none yet."""
    for message in candidates:
        if message.role == "user" and not message.automatic:
            return message.preview(PREVIEW_CHARS)
    return ""


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidTitle(
            f"A title has at most {MAX_TITLE_CHARS} characters; this one has {len(title)}."
        ).coded("title_too_long", limit=MAX_TITLE_CHARS, length=len(title))
    return title


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner:
        raise StoreError("Every store call needs the owner's id (a non-empty string).")


def _utcnow() -> datetime:
    return datetime.now(UTC)
