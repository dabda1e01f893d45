"""The conversation store on real databases: a SQLite file and a throwaway PostgreSQL server.

Every behavioural test runs on both backends (the `store` fixture); the file-level failures
(corrupted, foreign, read-only, locked, full) are SQLite's own.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.chat.context import Completion, DropOldest, Summarize
from core.chat.conversation import Conversation, Message, SummaryEvent, SummaryVersion, Turn
from core.chat.settings import ChatSettings
from core.chat.summaries import offline_summary
from core.counting.tokens import tokenizer_for
from core.errors import ConfigError, DashboardError, ServerError
from core.policy.owners import owner_for_user
from core.providers.backends import Usage
from core.store.database import (
    MESSAGE_DRAFT,
    ConversationNotFound,
    InvalidTitle,
    NotADatabase,
    StaleConversation,
    Store,
    StoredConversation,
    StoreError,
    StoreUnavailable,
    alembic_config,
    describe_url,
    metadata,
)
from tests.conftest import REPO_ROOT
from tests.postgres import PostgresCluster, free_port

SYSTEM = "You are a careful cooking assistant."
POLICY = DropOldest()
SUMMARIZE = Summarize()
ALICE, BOB = "alice", "bob"


# --- building conversations with the real API ------------------------------------------------


def new_conversation(budget: int = 1024, persona_id: str | None = "chef") -> Conversation:
    return Conversation(
        SYSTEM, ChatSettings(model="gpt-4o-mini", context_budget=budget), persona_id=persona_id
    )


def chat(
    conversation: Conversation,
    question: str,
    answer: str,
    *,
    interrupted: bool = False,
    finish_reason: str | None = "stop",
    automatic: bool = False,
) -> Turn:
    """One turn: the question, the policy fitting the budget (maybe trimming), the answer."""
    conversation.add_user(question, automatic=automatic)
    POLICY.fit(conversation)
    return conversation.add_assistant(
        answer,
        Usage(prompt_tokens=conversation.prompt_tokens, completion_tokens=7),
        latency_s=0.25,
        interrupted=interrupted,
        finish_reason=None if interrupted else finish_reason,
    )


def exchange(i: int) -> tuple[str, str]:
    return (
        f"Question {i}: how long do I braise short ribs for {i % 7 + 2} people?",
        f"Answer {i}: about three hours at 150 °C, covered, turning once; rest them {i % 5 + 5} minutes.",
    )


def conversation_with(messages: int, budget: int = 1_000_000) -> Conversation:
    """A system prompt and (messages - 1) // 2 exchanges (`messages` in all when it is odd), trimmed
    as they went when the budget is small."""
    conversation = new_conversation(budget)
    for i in range((messages - 1) // 2):
        chat(conversation, *exchange(i))
    return conversation


def rich_conversation() -> Conversation:
    """Every kind of message and record: trims, a pin, an interrupted reply, a reply cut by the cap
    and the automatic request to continue it, an unanswered question, a regenerated answer."""
    conversation = new_conversation(budget=260)
    chat(conversation, "Pin this: I am allergic to peanuts.", "Noted: no peanuts, ever.")
    conversation.pin(conversation.messages[1].id)
    for i in range(4):
        chat(conversation, *exchange(i))
    chat(conversation, "Tell me a long story about bread.", "Once upon a time, a loaf", interrupted=True)
    chat(conversation, "List twenty spices.", "1. cumin 2. coriander", finish_reason="length")
    chat(conversation, "Continue.", "3. cardamom 4. clove", automatic=True)
    conversation.add_user("A question whose call failed.")
    chat(conversation, "What goes with lamb?", "Mint, garlic and rosemary.")
    conversation.regenerate()
    POLICY.fit(conversation)
    conversation.add_assistant(
        "Rosemary, garlic, anchovy.",
        Usage(prompt_tokens=90, completion_tokens=9, cached_prompt_tokens=64, cache_write_tokens=10),
    )
    assert conversation.trim_events, "the small budget must have trimmed"
    return conversation


def states(conversation: Conversation) -> Counter[str]:
    return Counter(message.state.value for message in conversation.messages)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def store(backend_url: str) -> Iterator[Store]:
    with Store(backend_url) as opened:
        yield opened


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@contextmanager
def counting(engine: sa.Engine) -> Iterator[Counter[str]]:
    """Statements by kind ("INSERT messages", "SELECT", ...) and "rows": parameter sets written."""
    counts: Counter[str] = Counter()

    def before(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> None:
        words = statement.split()
        kind = words[0].upper()
        if kind in ("INSERT", "UPDATE", "DELETE"):
            table = (words[2] if kind in ("INSERT", "DELETE") else words[1]).strip('"')
            counts[f"{kind} {table}"] += 1
            counts["statements written"] += 1
            counts["rows"] += len(parameters) if executemany else 1
        elif kind in ("SELECT", "WITH"):
            counts["SELECT"] += 1

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def row_counts(store: Store, conversation_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            table: conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE conversation_id = :id"), {"id": conversation_id}
            ).scalar_one()
            for table in ("messages", "turns", "trim_events")
        }


def conversation_row(store: Store, conversation_id: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM conversations WHERE id = :id"), {"id": conversation_id})
        return dict(row.one()._mapping)


# --- round trips ----------------------------------------------------------------------------


def test_round_trip_keeps_every_message_turn_trim_and_flag(store: Store):
    conversation = rich_conversation()
    handle = store.create(ALICE, conversation)
    loaded, loaded_handle = store.load(ALICE, handle.id)

    assert loaded.to_dict() == conversation.to_dict()
    assert loaded_handle == handle
    assert {"trimmed", "unanswered", "replaced", "context"} <= set(states(loaded))
    flags = [(m.pinned, m.interrupted, m.cut_off, m.automatic) for m in loaded.messages]
    assert any(f[0] for f in flags) and any(f[1] for f in flags)
    assert any(f[2] for f in flags) and any(f[3] for f in flags)
    # The rebuilt conversation carries on exactly like the original.
    assert loaded.prompt_tokens == conversation.prompt_tokens
    assert loaded.api_messages() == conversation.api_messages()
    assert (loaded.turns[-1].cached_tokens, loaded.turns[-1].cache_write_tokens) == (64, 10)


def test_incremental_saves_load_as_the_conversation_in_memory(store: Store):
    conversation = new_conversation(budget=300)
    handle = store.create(ALICE, conversation)
    for i in range(12):
        chat(conversation, *exchange(i))
        if i == 3:
            conversation.pin(conversation.messages[-2].id)
        handle = store.save(ALICE, handle, conversation)
        loaded, loaded_handle = store.load(ALICE, handle.id)
        assert loaded.to_dict() == conversation.to_dict()
        assert loaded_handle == handle
    assert conversation.trim_events and handle.version == 13
    assert row_counts(store, handle.id) == {
        "messages": len(conversation.messages),
        "turns": len(conversation.turns),
        "trim_events": len(conversation.trim_events),
    }


def test_an_imported_file_saved_twice_keeps_its_message_ids_in_both(store: Store):
    exported = rich_conversation().to_json()
    first = store.create(ALICE, Conversation.from_json(exported))
    second = store.create(ALICE, Conversation.from_json(exported))
    assert first.id != second.id
    for handle in (first, second):
        assert store.load(ALICE, handle.id)[0].to_dict() == json.loads(exported)


def test_settings_and_persona_changes_are_saved(store: Store):
    conversation = conversation_with(5)
    handle = store.create(ALICE, conversation)
    conversation.update_settings(context_budget=4096, max_reply_tokens=512, sampling={"temperature": 0.3})
    with counting(store.engine) as writes:
        handle = store.save(ALICE, handle, conversation)
    assert writes["statements written"] == 1, "same tokenizer: only the conversation row changes"
    loaded, _ = store.load(ALICE, handle.id)
    assert loaded.settings == conversation.settings
    assert loaded.settings.sampling.temperature == 0.3

    # A model with another tokenizer recounts every message: each is rewritten with its new count.
    conversation.update_settings(model="gpt-4")
    handle = store.save(ALICE, handle, conversation)
    loaded, _ = store.load(ALICE, handle.id)
    assert loaded.to_dict() == conversation.to_dict()
    with store.engine.connect() as conn:
        saved_tokens = conn.execute(
            sa.text("SELECT tokens FROM messages WHERE conversation_id = :id ORDER BY position"),
            {"id": handle.id},
        ).scalars()
        assert list(saved_tokens) == [m.tokens for m in conversation.messages]


def test_timestamps_are_utc_and_exact(store: Store):
    conversation = conversation_with(3)
    handle = store.create(ALICE, conversation)
    loaded, _ = store.load(ALICE, handle.id)
    assert [m.created_at for m in loaded.messages] == [m.created_at for m in conversation.messages]
    assert all(m.created_at.tzinfo is UTC for m in loaded.messages)
    (summary,) = store.list(ALICE)
    assert summary.created_at.tzinfo is UTC and summary.created_at <= summary.updated_at


# --- what a save writes ---------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1_000_000, 400], ids=["no-trims", "trims-every-turn"])
def test_a_save_writes_the_same_rows_at_20_200_and_2000_messages(store: Store, budget: int):
    per_size = {}
    for size in (20, 200, 2000):
        conversation = conversation_with(size + 1, budget)  # the system prompt and `size` messages
        handle = store.create(ALICE, conversation)
        chat(conversation, *exchange(size))
        with counting(store.engine) as writes:
            handle = store.save(ALICE, handle, conversation)
        assert len(conversation.messages) == size + 3
        per_size[size] = dict(writes)
        assert store.load(ALICE, handle.id)[0].to_dict() == conversation.to_dict()

    assert per_size[20] == per_size[200] == per_size[2000], per_size
    expected = {
        "UPDATE conversations": 1,  # the version check, and the counts
        "INSERT messages": 1,  # the question and the answer, in one statement
        "INSERT turns": 1,
        "statements written": 3,
        "rows": 4,
    }
    if budget == 400:  # the oldest exchange leaves: its two messages rewritten, one trim event
        expected |= {"UPDATE messages": 1, "INSERT trim_events": 1, "statements written": 5, "rows": 7}
    assert per_size[2000] == expected


def test_a_pin_rewrites_only_that_message(store: Store):
    conversation = conversation_with(201)
    handle = store.create(ALICE, conversation)
    old = conversation.messages[3]
    conversation.pin(old.id)
    with counting(store.engine) as writes:
        handle = store.save(ALICE, handle, conversation)
    assert writes["UPDATE messages"] == 1 and writes["rows"] == 2  # the conversation row + that message
    assert store.load(ALICE, handle.id)[0].message(old.id).pinned
    conversation.pin(old.id, False)
    handle = store.save(ALICE, handle, conversation)
    assert not store.load(ALICE, handle.id)[0].message(old.id).pinned


def test_loading_2000_messages_takes_seven_queries(store: Store):
    conversation = conversation_with(2001, budget=3000)
    handle = store.create(ALICE, conversation)
    with counting(store.engine) as queries:
        loaded, _ = store.load(ALICE, handle.id)
    assert queries["SELECT"] == 7 and queries["statements written"] == 0
    assert len(loaded.messages) == 2001 and loaded.to_dict() == conversation.to_dict()


def test_a_handle_for_another_conversation_is_refused(store: Store):
    short, long = conversation_with(3), conversation_with(9)
    handle = store.create(ALICE, long)
    with pytest.raises(StoreError, match="not the one this handle was made for"):
        store.save(ALICE, handle, short)


# --- concurrency: stale writes, several replicas --------------------------------------------


def test_a_stale_handle_raises_and_writes_nothing(store: Store):
    handle = store.create(ALICE, conversation_with(5))
    tab_a, handle_a = store.load(ALICE, handle.id)
    tab_b, handle_b = store.load(ALICE, handle.id)

    chat(tab_a, "From tab A.", "Answer in A.")
    handle_a = store.save(ALICE, handle_a, tab_a)
    before = (store.load(ALICE, handle.id)[0].to_dict(), row_counts(store, handle.id))

    chat(tab_b, "From tab B.", "Answer in B.")
    tab_b.pin(tab_b.messages[1].id)
    with pytest.raises(StaleConversation, match="Reload") as raised:
        store.save(ALICE, handle_b, tab_b)
    assert (raised.value.expected, raised.value.found) == (1, 2)
    assert (store.load(ALICE, handle.id)[0].to_dict(), row_counts(store, handle.id)) == before

    # Tab B reloads, and goes on from what tab A saved.
    tab_b, handle_b = store.load(ALICE, handle.id)
    chat(tab_b, "From tab B again.", "Answer.")
    handle_b = store.save(ALICE, handle_b, tab_b)
    assert handle_b.version == 3
    with pytest.raises(StaleConversation):
        store.save(ALICE, handle_a, tab_a)


def test_two_replicas_saving_at_once_one_wins_one_is_told_to_reload(backend_url: str):
    with Store(backend_url) as first, Store(backend_url) as second:
        handle = first.create(ALICE, conversation_with(5))
        results: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def save(name: str, replica: Store) -> None:
            conversation, loaded_handle = replica.load(ALICE, handle.id)
            chat(conversation, f"From {name}.", f"Answer for {name}.")
            barrier.wait()
            try:
                results[name] = replica.save(ALICE, loaded_handle, conversation)
            except DashboardError as exc:
                results[name] = exc

        threads = [threading.Thread(target=save, args=item) for item in (("one", first), ("two", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        outcomes = sorted(type(result).__name__ for result in results.values())
        assert outcomes == ["StaleConversation", "StoredConversation"], results
        loaded, loaded_handle = second.load(ALICE, handle.id)
        assert loaded_handle.version == 2 and len(loaded.messages) == 7


def test_a_failed_save_writes_nothing_and_a_retry_writes_everything(store: Store):
    conversation = conversation_with(40, budget=400)
    handle = store.create(ALICE, conversation)
    saved = store.load(ALICE, handle.id)[0].to_dict()
    chat(conversation, *exchange(99))  # trims: two messages change state
    conversation.pin(conversation.messages[-2].id)
    assert conversation.trim_events[-1].turn == len(conversation.turns)

    def fail_after_first_message_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO messages"):
            raise OSError("the power went out")

    sa.event.listen(store.engine, "after_cursor_execute", fail_after_first_message_insert)
    try:
        with pytest.raises(OSError, match="power"):
            store.save(ALICE, handle, conversation)
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", fail_after_first_message_insert)
    assert store.load(ALICE, handle.id)[0].to_dict() == saved
    assert store.load(ALICE, handle.id)[1] == handle

    # The same handle again: the messages changed in place are still rewritten.
    handle = store.save(ALICE, handle, conversation)
    assert store.load(ALICE, handle.id)[0].to_dict() == conversation.to_dict()


KILLED_SAVE = textwrap.dedent(
    """
    import os, sys
    import sqlalchemy as sa
    from core.store.database import Store
    from tests.test_store import chat, exchange

    url, owner, conversation_id = sys.argv[1:]
    store = Store(url)
    conversation, handle = store.load(owner, conversation_id)
    for i in range(3):
        chat(conversation, *exchange(100 + i))

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def die(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO messages"):
            os._exit(42)  # the process dies mid-transaction: no rollback, no close

    store.save(owner, handle, conversation)
    """
)


def test_a_process_killed_mid_save_leaves_the_previous_version(backend_url: str):
    with Store(backend_url) as store:
        handle = store.create(ALICE, conversation_with(30, budget=400))
        saved = store.load(ALICE, handle.id)[0].to_dict()
        counts = row_counts(store, handle.id)
    result = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, backend_url, ALICE, handle.id],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 42, result.stderr
    with Store(backend_url) as reopened:
        loaded, loaded_handle = reopened.load(ALICE, handle.id)
        assert loaded.to_dict() == saved and loaded_handle == handle
        assert row_counts(reopened, handle.id) == counts
        chat(loaded, "After the crash.", "Still here.")
        reopened.save(ALICE, loaded_handle, loaded)


def test_a_reply_draft_is_saved_with_its_question_and_recovered_as_an_interrupted_reply(backend_url: str):
    conversation = conversation_with(21, budget=400)
    with Store(backend_url) as store:
        handle = store.create(ALICE, conversation)
        conversation.add_user("Tell me the whole story of bread.")
        POLICY.fit(conversation)  # trims before the call: saved with the first draft
        with counting(store.engine) as writes:
            handle = store.save(ALICE, handle, conversation, reply_draft="Once upon a time")
        # The question and the trims it caused, the version, and the draft (replaced in place).
        assert writes["INSERT drafts"] == writes["DELETE drafts"] == writes["INSERT messages"] == 1
        assert handle.reply_draft_saved
        with counting(store.engine) as writes:
            handle = store.save(ALICE, handle, conversation, reply_draft="Once upon a time, a loaf")
        assert dict(writes) == {
            "UPDATE conversations": 1,
            "DELETE drafts": 1,
            "INSERT drafts": 1,
            "statements written": 3,
            "rows": 3,
        }
    # A server that stops here (kill -9) never saves the reply; a new process reads the draft.
    with Store(backend_url) as reopened:
        loaded, loaded_handle = reopened.load(ALICE, handle.id)
        question, reply = loaded.messages[-2:]
        assert (question.role, question.content) == ("user", "Tell me the whole story of bread.")
        assert (reply.role, reply.interrupted) == ("assistant", True)
        assert reply.content == "Once upon a time, a loaf"
        assert loaded.turns[-1].interrupted and loaded.pending_user_message is None
        assert [m.state for m in loaded.messages] == [m.state for m in conversation.messages] + ["context"]
        assert loaded_handle.reply_draft_saved and loaded_handle.saved_messages == len(conversation.messages)
        # The next save writes the recovered reply as a message and removes the draft.
        loaded_handle = reopened.save(ALICE, loaded_handle, loaded)
        again, again_handle = reopened.load(ALICE, handle.id)
        assert again.to_dict() == loaded.to_dict() and not again_handle.reply_draft_saved
        assert row_counts(reopened, handle.id)["messages"] == len(loaded.messages)


def test_a_reply_that_ends_replaces_its_draft(store: Store):
    conversation = conversation_with(5)
    handle = store.create(ALICE, conversation)
    conversation.add_user("Another question.")
    handle = store.save(ALICE, handle, conversation, reply_draft="Half an ans")
    conversation.add_assistant("Half an answer, then the rest.", None, finish_reason="stop")
    handle = store.save(ALICE, handle, conversation)
    loaded, loaded_handle = store.load(ALICE, handle.id)
    assert loaded.to_dict() == conversation.to_dict() and not loaded.messages[-1].interrupted
    assert not loaded_handle.reply_draft_saved
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM drafts")).scalar_one() == 0


def test_a_message_draft_is_read_with_the_conversation_until_dropped_and_only_by_its_owner(store: Store):
    handle = store.create(ALICE, conversation_with(5))
    assert store.load(ALICE, handle.id)[1].unsent_text is None
    store.keep_draft(ALICE, handle.id, MESSAGE_DRAFT, "written in a stale tab")
    store.keep_draft(ALICE, handle.id, MESSAGE_DRAFT, "written in a stale tab, twice")
    loaded, loaded_handle = store.load(ALICE, handle.id)
    assert (
        loaded_handle.unsent_text == "written in a stale tab, twice" and not loaded_handle.reply_draft_saved
    )
    assert len(loaded.messages) == 5  # a message draft is not a message
    for other_owner in (
        lambda: store.keep_draft(BOB, handle.id, MESSAGE_DRAFT, "x"),
        lambda: store.drop_draft(BOB, handle.id, MESSAGE_DRAFT),
    ):
        with pytest.raises(ConversationNotFound):
            other_owner()
    store.drop_draft(ALICE, handle.id, MESSAGE_DRAFT)
    assert store.load(ALICE, handle.id)[1].unsent_text is None


def test_a_draft_of_a_stale_copy_is_not_saved(store: Store):
    conversation = conversation_with(5)
    handle = store.create(ALICE, conversation)
    elsewhere, elsewhere_handle = store.load(ALICE, handle.id)
    chat(elsewhere, "From another tab.", "Answered there.")
    store.save(ALICE, elsewhere_handle, elsewhere)
    conversation.add_user("From this tab.")
    with pytest.raises(StaleConversation):
        store.save(ALICE, handle, conversation, reply_draft="Partial")
    assert store.load(ALICE, handle.id)[0].messages[-1].content == "Answered there."


# --- owners ---------------------------------------------------------------------------------


def test_another_owner_cannot_see_or_touch_a_conversation(store: Store):
    conversation = conversation_with(5)
    handle = store.create(ALICE, conversation, title="Alice's ribs")
    bobs = new_conversation()
    chat(bobs, "Bob's own question.", "Bob's own answer.")
    store.create(BOB, bobs)
    before = (conversation_row(store, handle.id), row_counts(store, handle.id))

    for attempt in (
        lambda: store.load(BOB, handle.id),
        lambda: store.rename(BOB, handle.id, "Bob's now"),
        lambda: store.delete(BOB, handle.id),
        lambda: store.restore(BOB, handle.id),
        lambda: store.save(BOB, handle, conversation),
    ):
        with pytest.raises(ConversationNotFound) as raised:
            attempt()
        assert str(raised.value) == str(ConversationNotFound(handle.id))  # as if it did not exist
    assert [s.owner for s in store.list(BOB, include_deleted=True)] == [BOB]
    assert store.list(BOB, search="ribs") == [] and store.list(BOB, search="Alice") == []
    assert len(store.list(BOB, search="Bob's own")) == 1

    store.delete(ALICE, handle.id)
    assert store.purge_deleted(BOB, timedelta(0)) == 0
    store.restore(ALICE, handle.id)
    assert (conversation_row(store, handle.id), row_counts(store, handle.id)) == before


def test_missing_ids_raise_not_found(store: Store):
    ghost = StoredConversation("0" * 32, 1, 1, 0, 0, "{}", False)
    for attempt in (
        lambda: store.load(ALICE, ghost.id),
        lambda: store.rename(ALICE, ghost.id, "x"),
        lambda: store.delete(ALICE, ghost.id),
        lambda: store.restore(ALICE, ghost.id),
        lambda: store.save(ALICE, ghost, new_conversation()),
    ):
        with pytest.raises(ConversationNotFound, match="There is no saved conversation"):
            attempt()
    with pytest.raises(StoreError, match="owner"):
        store.list("")


# --- listing, searching, titles, trash ------------------------------------------------------


def test_list_is_newest_first_and_filters_by_persona(store: Store):
    chef = store.create(ALICE, new_conversation(persona_id="chef"), title="chef")
    poet = store.create(ALICE, new_conversation(persona_id="poet"), title="poet")
    plain = store.create(ALICE, new_conversation(persona_id=None), title="plain")
    assert [s.title for s in store.list(ALICE)] == ["plain", "poet", "chef"]

    conversation, handle = store.load(ALICE, chef.id)
    chat(conversation, "Hello?", "Hello.")
    store.save(ALICE, handle, conversation)
    summaries = store.list(ALICE)
    assert [s.title for s in summaries] == ["chef", "plain", "poet"]
    assert summaries[0].message_count == 3 and summaries[0].persona_id == "chef"
    assert [s.id for s in store.list(ALICE, persona_id="poet")] == [poet.id]
    assert [s.id for s in store.list(ALICE, limit=2)] == [chef.id, plain.id]


def test_search_matches_titles_and_text_case_insensitively_and_literally(store: Store):
    def make(title: str, *texts: str) -> str:
        conversation = new_conversation()
        for text in texts:
            chat(conversation, text, "Understood.")
        return store.create(ALICE, conversation, title=title).id

    percent = make("Discounts", "Is 100% rye bread worth it?")
    underscore = make("snake_case names", "How do I name my sourdough?")
    plain = make("Weeknight soup", "What is 1000 grams in pounds?", "HELLO from the kitchen")
    search = {
        "100%": {percent},
        "%": {percent},
        "_": {underscore},
        "e_c": {underscore},
        "10_": set(),
        "hello": {plain},
        "SOURDOUGH": {underscore},
        "weeknight": {plain},
        "Understood": {percent, underscore, plain},  # in an assistant message
        "no such words": set(),
    }
    for needle, expected in search.items():
        assert {s.id for s in store.list(ALICE, search=needle)} == expected, needle
    assert len(store.list(ALICE, search="  ")) == 3


def test_titles_are_automatic_until_renamed(store: Store):
    conversation = new_conversation()
    handle = store.create(ALICE, conversation)
    (summary,) = store.list(ALICE)
    assert summary.title == "" and summary.title_is_auto and summary.display_title == "New conversation"

    question = "What is the single best way to keep fresh basil green for more than a couple of days?"
    chat(conversation, question, "Stems in water, loosely covered, on the counter.")
    handle = store.save(ALICE, handle, conversation)
    (summary,) = store.list(ALICE)
    assert summary.title == conversation.messages[1].preview(60) and len(summary.title) == 60
    chat(conversation, "And parsley?", "The same.")
    handle = store.save(ALICE, handle, conversation)
    assert store.list(ALICE)[0].title == summary.title

    store.rename(ALICE, handle.id, "  Herbs   ")
    (summary,) = store.list(ALICE)
    assert (summary.title, summary.title_is_auto) == ("Herbs", False)
    with pytest.raises(InvalidTitle, match="empty"):
        store.rename(ALICE, handle.id, "   ")
    with pytest.raises(InvalidTitle, match="200"):
        store.rename(ALICE, handle.id, "x" * 201)
    assert store.create(ALICE, new_conversation(), title="Given").title_pending is False
    assert store.create(ALICE, new_conversation(), title=" ").title_pending is True


def test_a_rename_in_another_tab_survives_the_automatic_title(store: Store):
    conversation = new_conversation()
    handle = store.create(ALICE, conversation)
    store.rename(ALICE, handle.id, "Named elsewhere")  # does not make the handle stale
    chat(conversation, "First question.", "First answer.")
    store.save(ALICE, handle, conversation)
    assert store.list(ALICE)[0].title == "Named elsewhere"


def test_delete_restore_and_purge(store: Store):
    kept = store.create(ALICE, conversation_with(3), title="kept")
    binned = store.create(ALICE, conversation_with(5), title="binned")
    store.delete(ALICE, binned.id)
    store.delete(ALICE, binned.id)  # twice is harmless
    assert [s.title for s in store.list(ALICE)] == ["kept"]
    deleted = {s.title: s.deleted_at for s in store.list(ALICE, include_deleted=True)}
    assert deleted["kept"] is None and deleted["binned"] is not None
    assert len(store.load(ALICE, binned.id)[0].messages) == 5, "the trash can still be looked at"

    store.restore(ALICE, binned.id)
    assert {s.title for s in store.list(ALICE)} == {"kept", "binned"}

    store.delete(ALICE, binned.id)
    assert store.purge_deleted(ALICE, timedelta(days=30)) == 0
    assert store.purge_deleted(ALICE, datetime.now(UTC) + timedelta(seconds=1)) == 1
    with pytest.raises(ConversationNotFound):
        store.load(ALICE, binned.id)
    assert row_counts(store, binned.id) == {"messages": 0, "turns": 0, "trim_events": 0}
    assert [s.id for s in store.list(ALICE, include_deleted=True)] == [kept.id]


# --- the running summary (policy "summarize") ------------------------------------------------


def summarizing_chat(conversation: Conversation, question: str, answer: str) -> Turn:
    """One turn under the policy "summarize", the offline model writing the summaries."""
    conversation.add_user(question)
    SUMMARIZE.fit(conversation, complete=offline_summarizer)
    return conversation.add_assistant(
        answer, Usage(prompt_tokens=conversation.prompt_tokens, completion_tokens=7)
    )


def offline_summarizer(messages: list[dict[str, str]]) -> Completion:
    text = offline_summary(messages, tokenizer_for("gpt-4o-mini"))
    assert text is not None
    return Completion(
        text, model="gpt-4o-mini", usage=Usage(prompt_tokens=120, completion_tokens=40), usage_source="local"
    )


def failing_summarizer(messages: list[dict[str, str]]) -> str:
    raise ServerError("down", status_code=503)


def summarized_conversation(turns: int = 10) -> Conversation:
    conversation = new_conversation(budget=320)
    conversation.update_settings(context_policy="summarize", summarizer_model="gpt-4o-mini")
    for i in range(turns):
        summarizing_chat(conversation, *exchange(i))
    return conversation


def test_round_trip_keeps_the_summary_its_versions_and_events(store: Store):
    conversation = summarized_conversation()
    conversation.edit_summary("The user braises short ribs for a crowd.")
    conversation.add_user("Fail the summarizer now, please. " * 4)
    SUMMARIZE.fit(conversation, complete=failing_summarizer)
    conversation.add_assistant("Dropped instead.")
    events = conversation.summary_events
    assert any(e.fallback for e in events) and any(not e.fallback for e in events)
    assert [v.source for v in conversation.summary_versions][-1] == "user"
    handle = store.create(ALICE, conversation)
    loaded, loaded_handle = store.load(ALICE, handle.id)
    assert loaded.to_dict() == conversation.to_dict()
    assert loaded_handle == handle
    assert loaded.summary == conversation.summary
    assert loaded.prompt_tokens == conversation.prompt_tokens
    assert loaded.api_messages() == conversation.api_messages()
    assert "summarized" in states(loaded)
    assert [t.summary_tokens for t in loaded.turns] == [t.summary_tokens for t in conversation.turns]


def test_saves_write_only_the_new_summary_versions_and_events(store: Store):
    conversation = new_conversation(budget=320)
    conversation.update_settings(context_policy="summarize")
    handle = store.create(ALICE, conversation)
    written: Counter[str] = Counter()
    for i in range(12):
        with counting(store.engine) as writes:
            summarizing_chat(conversation, *exchange(i))
            handle = store.save(ALICE, handle, conversation)
        written += writes
        assert writes["INSERT summary_events"] <= 1 and writes["INSERT summary_versions"] <= 1
        assert store.load(ALICE, handle.id)[0].to_dict() == conversation.to_dict()
    assert written["INSERT summary_events"] == len(conversation.summary_events) > 1
    conversation.edit_summary("Edited by hand.")
    with counting(store.engine) as writes:
        handle = store.save(ALICE, handle, conversation)
    assert writes["INSERT summary_versions"] == 1 and writes["rows"] == 2  # the version, the conversation
    with store.engine.connect() as conn:
        counts = {
            table: conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE conversation_id = :id"), {"id": handle.id}
            ).scalar_one()
            for table in ("summary_versions", "summary_events")
        }
    assert counts == {
        "summary_versions": len(conversation.summary_versions),
        "summary_events": len(conversation.summary_events),
    }


def upgraded_from(backend_url: str, revision: str) -> tuple[Conversation, dict, StoredConversation]:
    """A conversation saved, the database downgraded to `revision`, then opened (so upgraded to the
    newest again): the conversation as it loads then, as it was saved, and its handle."""
    with Store(backend_url) as store:
        handle = store.create(ALICE, conversation_with(9, budget=200))
        before = store.load(ALICE, handle.id)[0].to_dict()
    command.downgrade(alembic_config(backend_url), revision)
    with Store(backend_url) as store:
        assert store.schema_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        loaded, handle = store.load(ALICE, handle.id)
    return loaded, before, handle


def test_a_database_from_before_summaries_upgrades_and_keeps_its_conversations(backend_url: str):
    loaded, before, _ = upgraded_from(backend_url, "0002_personas")
    assert loaded.to_dict() == before
    assert all(turn.summary_tokens == 0 for turn in loaded.turns)


def test_a_database_from_before_cached_tokens_upgrades_and_keeps_its_turns(backend_url: str):
    loaded, before, handle = upgraded_from(backend_url, "0005_long_owners")
    assert loaded.to_dict() == before
    assert all(turn.reported_cached_tokens is None for turn in loaded.turns)
    chat(loaded, "A cached question?", "A cached answer.")
    loaded.turns[-1].reported_cached_tokens = 128
    with Store(backend_url) as store:
        store.save(ALICE, handle, loaded)
        assert store.load(ALICE, handle.id)[0].turns[-1].cached_tokens == 128


def test_a_database_from_before_count_margins_upgrades_and_keeps_its_turns(backend_url: str):
    loaded, before, _ = upgraded_from(backend_url, "0007_test_sets")
    assert loaded.to_dict() == before
    assert all(turn.count_margin == 0 for turn in loaded.turns)


def test_the_summary_tables_hold_every_field_of_a_version_and_an_event():
    version_columns = set(metadata.tables["summary_versions"].columns.keys()) - {"conversation_id", "seq"}
    assert version_columns == set(SummaryVersion.model_fields)
    event_columns = set(metadata.tables["summary_events"].columns.keys()) - {"conversation_id", "seq"}
    assert event_columns == set(SummaryEvent.model_fields)


# --- schema and migrations ------------------------------------------------------------------


def test_a_new_database_is_at_the_newest_migration_and_matches_the_code(store: Store):
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head and store.schema_revision() == head
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == [], "core/store/database.py's tables and the migrations disagree"


def test_opening_again_is_idempotent(backend_url: str):
    with Store(backend_url) as first:
        handle = first.create(ALICE, conversation_with(5))
        saved = first.load(ALICE, handle.id)[0].to_dict()
    for _ in range(2):
        with Store(backend_url) as again, counting(again.engine) as writes:
            assert again.load(ALICE, handle.id)[0].to_dict() == saved
            assert writes["statements written"] == 0
            with again.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_the_schema_has_no_place_for_a_key(store: Store):
    key_like = re.compile(r"key|secret|passw|credential|auth|bearer|(^|_)token$")
    columns = {
        f"{table}.{column['name']}"
        for table in sa.inspect(store.engine).get_table_names()
        for column in sa.inspect(store.engine).get_columns(table)
    }
    assert "messages.tokens" in columns  # token counts are numbers, not keys
    assert [name for name in columns if key_like.search(name.split(".")[1].lower())] == []


def test_the_tables_hold_every_field_of_a_message_and_a_turn():
    message_columns = set(metadata.tables["messages"].columns.keys()) - {"conversation_id", "position"}
    assert message_columns == (set(Message.model_fields) - {"id"}) | {"message_id"}
    turn_columns = set(metadata.tables["turns"].columns.keys()) - {"conversation_id"}
    assert turn_columns == set(Turn.model_fields)


# --- SQLite files: where they go, and files that are not ours -------------------------------


def test_sqlite_gets_wal_and_foreign_keys(sqlite_file: Path):
    with Store(f"sqlite:///{sqlite_file}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_from_environ_defaults_to_sqlite_and_creates_the_folder(tmp_path: Path):
    default = tmp_path / "data" / "nested" / "dashboard.db"
    with Store.from_environ({}, default) as store:
        assert store.where == str(default) and default.is_file()
    other = tmp_path / "elsewhere.db"
    with Store.from_environ({"DATABASE_URL": f"sqlite:///{other}"}, default) as store:
        assert store.where == str(other) and other.is_file()
    with Store.from_environ({"DATABASE_URL": "  "}, default) as store:
        assert store.where == str(default)


def test_from_environ_rejects_a_bad_url_without_showing_the_password(tmp_path: Path):
    for url, message in (
        ("not a url at all", "is not a database URL"),
        ("mysql://me:hunter2@db.example/chat", "only sqlite:/// and postgresql"),
    ):
        with pytest.raises(ConfigError) as raised:
            Store.from_environ({"DATABASE_URL": url}, tmp_path / "x.db")
        assert raised.value.setting == "DATABASE_URL" and message in str(raised.value)
        assert "hunter2" not in str(raised.value)


def test_an_unreachable_postgres_names_the_host_but_never_the_password():
    port = free_port()
    with pytest.raises(StoreUnavailable) as raised:
        Store(f"postgresql+psycopg://app:hunter2@127.0.0.1:{port}/chat")
    message = str(raised.value)
    assert f"postgresql+psycopg://***@127.0.0.1:{port}/chat" in message and "unavailable" in message
    assert "hunter2" not in message and "hunter2" not in raised.value.where


def test_from_environ_accepts_postgres_urls_without_a_driver(postgres_url: str, tmp_path: Path):
    bare = postgres_url.replace("postgresql+psycopg://", "postgres://")
    with Store.from_environ({"DATABASE_URL": bare}, tmp_path / "unused.db") as store:
        assert store.engine.dialect.driver == "psycopg"
        assert store.schema_revision() is not None
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffthis is not a database, just some bytes somebody left here" * 20,
        b"SQLite format 3\x00" + b"\x13\x37" * 2048,  # the right header, then garbage
        b"SQLite",  # cut short
    ],
    ids=["garbage", "corrupted-after-the-header", "truncated"],
)
def test_a_file_that_is_not_a_database_is_refused_and_left_alone(sqlite_file: Path, content: bytes):
    sqlite_file.write_bytes(content)
    with pytest.raises(NotADatabase) as raised:
        Store(f"sqlite:///{sqlite_file}")
    assert str(sqlite_file) in str(raised.value) and raised.value.where == str(sqlite_file)
    assert sqlite_file.read_bytes() == content
    assert sorted(p.name for p in sqlite_file.parent.iterdir()) == [sqlite_file.name]


def test_another_applications_database_is_refused_and_left_alone(sqlite_file: Path):
    with sqlite3.connect(sqlite_file) as other:
        other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        other.execute("INSERT INTO invoices (total) VALUES (12.5)")
    other.close()
    content = sqlite_file.read_bytes()
    with pytest.raises(NotADatabase, match=r"another application's tables \(invoices\)") as raised:
        Store(f"sqlite:///{sqlite_file}")
    assert str(sqlite_file) in str(raised.value)
    assert sqlite_file.read_bytes() == content
    assert sorted(p.name for p in sqlite_file.parent.iterdir()) == [sqlite_file.name]


def test_a_database_from_a_newer_version_is_refused_and_left_alone(sqlite_file: Path):
    with Store(f"sqlite:///{sqlite_file}") as store, store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    content = sqlite_file.read_bytes()
    with pytest.raises(NotADatabase, match="9999_from_the_future"):
        Store(f"sqlite:///{sqlite_file}")
    assert sqlite_file.read_bytes() == content


def test_a_folder_at_the_path_is_refused(tmp_path: Path):
    with pytest.raises(NotADatabase, match="is a folder"):
        Store(f"sqlite:///{tmp_path}")


# --- SQLite files that cannot be written ----------------------------------------------------


def saved_database(path: Path) -> StoredConversation:
    with Store(sa.URL.create("sqlite", database=str(path))) as store:
        return store.create(ALICE, conversation_with(7), title="Saved before")


def assert_reads_work_and_writes_fail(url: str, handle: StoredConversation, where: str) -> None:
    with Store(url) as store:
        (summary,) = store.list(ALICE)
        conversation, loaded_handle = store.load(ALICE, handle.id)
        assert summary.title == "Saved before" and loaded_handle == handle
        chat(conversation, "One more?", "Sure.")
        writes: list[Callable[[], object]] = [
            lambda: store.save(ALICE, loaded_handle, conversation),
            lambda: store.create(ALICE, new_conversation()),
            lambda: store.rename(ALICE, handle.id, "New name"),
            lambda: store.delete(ALICE, handle.id),
            lambda: store.purge_deleted(ALICE, timedelta(0)),
        ]
        for write in writes:
            with pytest.raises(StoreUnavailable, match="read-only") as raised:
                write()
            assert where in str(raised.value)
        assert len(store.load(ALICE, handle.id)[0].messages) == handle.saved_messages


def test_a_database_opened_read_only_still_reads(sqlite_file: Path):
    handle = saved_database(sqlite_file)
    content = sqlite_file.read_bytes()
    assert_reads_work_and_writes_fail(
        f"sqlite:///file:{sqlite_file}?mode=ro&uri=true", handle, str(sqlite_file)
    )
    assert sqlite_file.read_bytes() == content


def run_unprivileged(check: Callable[[], None]) -> None:
    """Run `check` as a user file permissions apply to: as root (which ignores them), in a forked
    child that drops to `nobody`; a failure there is reported here."""
    if os.geteuid() != 0:
        check()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            check()
            code = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        failure = report.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, failure


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder outside pytest's (root-only) tmp_path, so `nobody` can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="store-ro-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.iterdir()):
            path.chmod(0o755)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


@pytest.mark.parametrize("folder_mode", [0o555, 0o777], ids=["folder-read-only", "folder-writable"])
def test_a_database_without_write_permission_still_reads(world_readable_dir: Path, folder_mode: int):
    """Real file permissions: the file 0o444, opened by a user they bind. In a read-only folder its
    WAL index cannot be created, so it is opened immutable; in a writable one, read-only."""
    path = world_readable_dir / "my store, 100% #1?.db"
    handle = saved_database(path)
    content = path.read_bytes()
    path.chmod(0o444)
    world_readable_dir.chmod(folder_mode)
    url = sa.URL.create("sqlite", database=str(path)).render_as_string()
    run_unprivileged(lambda: assert_reads_work_and_writes_fail(url, handle, str(path)))
    assert path.read_bytes() == content


def test_a_new_database_in_a_folder_that_cannot_be_written(world_readable_dir: Path):
    world_readable_dir.chmod(0o555)
    path = world_readable_dir / "new.db"

    def check() -> None:
        with pytest.raises(StoreUnavailable, match="cannot be used") as raised:
            Store(f"sqlite:///{path}")
        assert str(path) in str(raised.value)

    run_unprivileged(check)
    assert not path.exists()


def test_a_missing_database_opened_read_only_is_unavailable(tmp_path: Path):
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreUnavailable, match="cannot be used") as raised:
        Store(f"sqlite:///file:{missing}?mode=ro&uri=true")
    assert str(missing) in str(raised.value) and not missing.exists()


def test_a_read_only_postgres_database_still_reads(postgres_cluster: PostgresCluster, postgres_url: str):
    """A standby, or a database whose transactions default to read-only."""
    with Store(postgres_url) as store:
        handle = store.create(ALICE, conversation_with(7), title="Saved before")
    name = sa.make_url(postgres_url).database
    postgres_cluster.admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    assert_reads_work_and_writes_fail(postgres_url, handle, describe_url(sa.make_url(postgres_url)))


def test_a_locked_database_says_so_and_works_once_released(sqlite_file: Path):
    handle = saved_database(sqlite_file)
    with Store(f"sqlite:///{sqlite_file}", busy_timeout_s=0.2) as store:
        conversation, handle = store.load(ALICE, handle.id)
        chat(conversation, "While locked?", "Yes.")
        other = sqlite3.connect(sqlite_file, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailable, match="locked by another process") as raised:
                store.save(ALICE, handle, conversation)
            assert str(sqlite_file) in str(raised.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        handle = store.save(ALICE, handle, conversation)
        assert store.load(ALICE, handle.id)[0].to_dict() == conversation.to_dict()


def test_a_full_database_says_so_and_keeps_what_was_saved(sqlite_file: Path):
    handle = saved_database(sqlite_file)
    with Store(f"sqlite:///{sqlite_file}") as store:
        conversation, handle = store.load(ALICE, handle.id)
        saved = conversation.to_dict()
        with store.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

        @sa.event.listens_for(store.engine, "connect")
        def cap_size(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        store.engine.dispose()  # new connections, with the cap
        for i in range(200):
            chat(conversation, *exchange(i))
        with pytest.raises(StoreUnavailable, match="is full") as raised:
            store.save(ALICE, handle, conversation)
        assert str(sqlite_file) in str(raised.value)
        assert store.load(ALICE, handle.id)[0].to_dict() == saved


# --- personas and comparisons ---------------------------------------------------------------


def test_personas_are_saved_per_owner_and_replaced_in_place(store: Store) -> None:
    store.save_persona("alice", "hotpot", "name: Hotpot\n")
    store.save_persona("alice", "noodles", "name: Noodles\n")
    store.save_persona("bob", "hotpot", "name: Bob's\n")
    store.save_persona("alice", "hotpot", "name: Hotpot v2\n")
    assert store.list_personas("alice") == [("hotpot", "name: Hotpot v2\n"), ("noodles", "name: Noodles\n")]
    assert store.list_personas("bob") == [("hotpot", "name: Bob's\n")]
    store.delete_persona("bob", "noodles")  # not Bob's: nothing happens
    assert len(store.list_personas("alice")) == 2
    store.delete_persona("alice", "noodles")
    assert [pid for pid, _ in store.list_personas("alice")] == ["hotpot"]


def test_comparisons_are_saved_per_owner(store: Store) -> None:
    first = store.save_comparison("alice", None, "first", '{"n": 1}')
    second = store.save_comparison("alice", None, "second", '{"n": 2}')
    assert store.save_comparison("alice", first, "first, again", '{"n": 3}') == first
    assert store.list_comparisons("alice") == [(first, "first, again"), (second, "second")]
    assert store.load_comparison("alice", first) == '{"n": 3}'
    assert sorted(store.comparison_records("alice")) == ['{"n": 2}', '{"n": 3}']
    # Bob can neither read nor overwrite Alice's.
    assert store.list_comparisons("bob") == [] and store.comparison_records("bob") == []
    with pytest.raises(StoreError, match="no saved comparison"):
        store.load_comparison("bob", first)
    with pytest.raises(StoreError, match="no saved comparison"):
        store.save_comparison("bob", first, "stolen", "{}")
    assert store.load_comparison("alice", first) == '{"n": 3}'


def test_test_sets_and_their_runs_are_saved_per_owner(store: Store) -> None:
    store.save_test_set("alice", "menus", '["a", "b"]')
    store.save_test_set("alice", "travel", '["c"]')
    store.save_test_set("alice", "menus", '["a", "b", "c"]')  # replaced, and now the newest
    assert store.list_test_sets("alice") == [("menus", '["a", "b", "c"]'), ("travel", '["c"]')]
    store.save_test_run("alice", "run1", "menus", '{"n": 1}')
    store.save_test_run("alice", "run2", "menus", '{"n": 2}')
    store.save_test_run("alice", "run3", "travel", '{"n": 3}')
    store.save_test_run("alice", "run1", "menus", '{"n": 1, "votes": 1}')  # a vote replaces the record
    assert store.test_run_records("alice", "menus") == ['{"n": 2}', '{"n": 1, "votes": 1}']
    assert len(store.test_run_records("alice")) == 3
    # Bob sees none of Alice's, and saving his own run under her run's id changes nothing of hers.
    assert store.list_test_sets("bob") == [] and store.test_run_records("bob") == []
    with pytest.raises(StoreError):
        store.save_test_run("bob", "run1", "menus", "{}")
    assert store.test_run_records("alice", "menus")[-1] == '{"n": 1, "votes": 1}'


def test_the_default_database_goes_to_data_dir_when_it_exists(tmp_path: Path) -> None:
    mounted, default = tmp_path / "data", tmp_path / "app" / "data" / "dashboard.db"
    with Store.from_environ({"DATA_DIR": str(mounted)}, default_path=default) as store:
        assert store.where == str(default)  # no such folder: the app's own
    mounted.mkdir()
    with Store.from_environ({"DATA_DIR": str(mounted)}, default_path=default) as store:
        assert store.where == str(mounted / "dashboard.db")
    with Store.from_environ(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "DATA_DIR": str(mounted)}
    ) as store:
        assert store.where == str(tmp_path / "x.db")  # DATABASE_URL wins


def test_an_oidc_owner_with_a_255_character_subject_is_stored(backend_url: str):
    """OIDC allows subjects of up to 255 characters; with `oidc:` and the issuer in front the owner
    is longer than that, and the store keeps it whole (PostgreSQL refused it before 0005)."""
    issuer = "https://login.example.org/realms/" + "tenant-" * 20
    owner = owner_for_user(issuer, "s" * 255)
    assert len(owner) > 255 + len(issuer)
    Store(backend_url).close()
    command.downgrade(alembic_config(backend_url), "0004_comparisons")  # the columns as they were
    with Store(backend_url) as store:  # upgrades them
        handle = store.create(owner, conversation_with(3))
        store.save_persona(owner, "mine", "name: Mine\n")
        comparison_id = store.save_comparison(owner, None, "a comparison", "{}")
        assert [summary.owner for summary in store.list(owner)] == [owner]
        assert store.load(owner, handle.id)[1].id == handle.id
        assert store.list_personas(owner) == [("mine", "name: Mine\n")]
        assert store.load_comparison(owner, comparison_id) == "{}"
        assert store.list(owner[:255]) == []  # no prefix of it is the same owner
