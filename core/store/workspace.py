"""One owner's conversations as one browser session sees them: the live `ChatSession`s it has
open, written through to the store on every change, and read back when a conversation is opened.

The store is the durable copy; the live sessions keep reruns fast. A conversation has its id
from the moment it is started; it is a draft (not in `handles`) until its first message, then it
is saved under that id and listed. When the store is missing or
failing, the workspace keeps working in memory and every save raises the store's error for the
page to show; nothing typed is lost.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from core.chat.conversation import Conversation, preview
from core.chat.session import ChatSession
from core.compare.comparison import LETTERS, Comparison, Pick
from core.compare.testsets import TestRunRecord, TestSet
from core.errors import DashboardError, PersonaFileError, TooManyPersonas
from core.personas.persona import Persona, parse_persona, persona_yaml
from core.providers.backends import ChatBackend
from core.store.database import (
    MESSAGE_DRAFT,
    ConversationSummary,
    Store,
    StoredConversation,
    StoreUnavailable,
    new_conversation_id,
)

#: The most personas one workspace keeps: each is read and checked when a visitor's session opens
#: (10,000 cost every new visitor 3.6-5.5 s of server time), and a gallery of more helps nobody.
MAX_PERSONAS = 500
#: How long a list read from the store (conversations, comparisons) is shown again while this
#: process writes nothing: every rerun draws the sidebar's list, and another process's writes
#: (a replica's, on a shared PostgreSQL) show this much later at most.
LISTING_REUSED_S = 5.0
#: The most lists kept (one per persona and search text): past it, all are read again.
LISTINGS_KEPT = 16

Listed = TypeVar("Listed")


@dataclass
class Workspace:
    store: Store | None
    owner: str
    #: Open conversations: id (the store's, kept from the moment one is started) -> session.
    sessions: dict[str, ChatSession] = field(default_factory=dict)
    handles: dict[str, StoredConversation] = field(default_factory=dict)
    #: Persona id -> the key of the conversation open for it.
    current: dict[str, str] = field(default_factory=dict)
    #: Personas this owner made or imported (read from the store once per browser session).
    personas: dict[str, Persona] | None = None
    #: Saved personas that no longer pass the checks (e.g. after a rule changed), one per row.
    persona_errors: builtins.list[PersonaFileError] = field(default_factory=list)
    #: Lists read from the store: what was asked -> (the store's write count then, when, the list).
    _listings: dict[tuple[Any, ...], tuple[int, float, Any]] = field(
        default_factory=dict, init=False, repr=False
    )

    # --- opening -----------------------------------------------------------------------------

    def session_for(self, persona: Persona, backend: ChatBackend) -> tuple[str, ChatSession]:
        """The conversation open for `persona` (a new one the first time, as a chat app opens on
        a new chat; the saved ones are listed), talking through `backend`."""
        key = self.current.get(persona.id)
        if key is None:
            key = self.new(persona, backend)
        session = self.sessions[key]
        session.backend = backend
        return key, session

    def open(self, conversation_id: str, backend: ChatBackend) -> str:
        """Load a saved conversation (once per browser session) and make it its persona's current."""
        if conversation_id not in self.sessions:
            if self.store is None:
                raise StoreUnavailable(
                    "Saved conversations cannot be read: the store is not open.", where=""
                ).coded("store_not_open")
            conversation, handle = self.store.load(self.owner, conversation_id)
            self.sessions[conversation_id] = ChatSession(conversation, backend)
            self.handles[conversation_id] = handle
        persona_id = self.sessions[conversation_id].conversation.persona_id
        if persona_id is not None:
            self.current[persona_id] = conversation_id
        return conversation_id

    def new(self, persona: Persona, backend: ChatBackend) -> str:
        """Start a new conversation with `persona` (a draft until its first message). The one open
        before stays saved and listed; its settings carry over."""
        old = self.sessions.get(self.current.get(persona.id, ""))
        session = ChatSession.start(persona, backend)
        if old is not None:
            settings = old.settings
            session.update_settings(
                model=settings.model,
                context_budget=settings.context_budget,
                max_reply_tokens=settings.max_reply_tokens,
            )
        key = new_conversation_id()
        if old is not None and len(old.conversation.messages) < 2:
            del self.sessions[self.current[persona.id]]  # an empty draft is replaced, not kept
        self.sessions[key] = session
        self.current[persona.id] = key
        return key

    def is_saved(self, key: str) -> bool:
        """True once the conversation is in the store (listed); False for a draft."""
        return key in self.handles

    def add_imported(self, conversation: Conversation, backend: ChatBackend) -> str:
        """An imported conversation becomes a new one (never overwriting another) and is opened."""
        session = ChatSession(conversation, backend)
        key = new_conversation_id()
        if self.store is not None:
            self.handles[key] = self.store.create(self.owner, conversation, conversation_id=key)
        self.sessions[key] = session
        if conversation.persona_id is not None:
            self.current[conversation.persona_id] = key
        return key

    def reload(self, key: str, backend: ChatBackend) -> str:
        """Forget this browser session's copy and read the conversation again (after a stale write)."""
        self.sessions.pop(key, None)
        self.handles.pop(key, None)
        return self.open(key, backend)

    # --- saving ------------------------------------------------------------------------------

    def save(self, key: str, *, reply_draft: str | None = None) -> None:
        """Write what changed to the store, under the conversation's id (and `reply_draft`, the
        text so far of the reply streaming now: `Store.save`).

        A draft with no message yet is not saved. Raises the store's errors (StaleConversation,
        StoreUnavailable, ...) with the session left as it is, so nothing typed is lost.
        """
        session = self.sessions[key]
        if self.store is None:
            return
        handle = self.handles.get(key)
        if handle is None:
            if len(session.conversation.messages) < 2:
                return
            handle = self.store.create(self.owner, session.conversation, conversation_id=key)
        else:
            handle = self.store.save(self.owner, handle, session.conversation, reply_draft=reply_draft)
        self.handles[key] = handle

    def keep_unsent(self, key: str) -> str | None:
        """Keep what the visitor wrote in this copy that is not saved (it went stale: another
        tab saved first) as the conversation's message draft, offered back when it is next
        opened or reloaded; the text kept, or None when there is nothing to keep."""
        handle = self.handles.get(key)
        if self.store is None or handle is None:
            return None
        added = self.sessions[key].conversation.messages[handle.saved_messages :]
        texts = [m.content for m in added if m.role == "user" and not m.automatic]
        if not texts:
            return None
        text = "\n\n".join(texts)
        self.store.keep_draft(self.owner, key, MESSAGE_DRAFT, text)
        return text

    def take_unsent(self, key: str) -> str | None:
        """The message draft read with the conversation (`keep_unsent`), once: it is forgotten
        (should the store fail to forget it, it is offered again the next time)."""
        handle = self.handles.get(key)
        if handle is None or handle.unsent_text is None:
            return None
        self.handles[key] = replace(handle, unsent_text=None)
        if self.store is not None:
            with contextlib.suppress(DashboardError):
                self.store.drop_draft(self.owner, key, MESSAGE_DRAFT)
        return handle.unsent_text

    # --- this owner's personas ----------------------------------------------------------------

    def custom_personas(self) -> dict[str, Persona]:
        """This owner's own personas; each saved one is checked again as a persona file."""
        if self.personas is None:
            self.personas, self.persona_errors = {}, []
            rows = self.store.list_personas(self.owner, limit=MAX_PERSONAS) if self.store else []
            for persona_id, text in rows:
                try:
                    self.personas[persona_id] = parse_persona(text, persona_id)
                except PersonaFileError as error:
                    self.persona_errors.append(error)
        return self.personas

    def save_persona(self, persona: Persona) -> None:
        """Create or replace one of this owner's personas (kept in memory when there is no store).
        A new one past MAX_PERSONAS raises TooManyPersonas."""
        own = self.custom_personas()
        if persona.id not in own and len(own) + len(self.persona_errors) >= MAX_PERSONAS:
            raise TooManyPersonas(MAX_PERSONAS)
        if self.store is not None:
            self.store.save_persona(self.owner, persona.id, persona_yaml(persona))
        self.custom_personas()[persona.id] = persona

    # --- comparisons ---------------------------------------------------------------------------

    def list_comparisons(self) -> builtins.list[tuple[str, str]]:
        store = self.store
        if store is None:
            return []
        return self._listed(("comparisons",), lambda: store.list_comparisons(self.owner))

    def save_comparison(self, comparison_id: str | None, comparison: Comparison) -> str | None:
        """Save the comparison (its columns' conversations, figures and picks); its id."""
        if self.store is None:
            return None
        rounds = comparison.rounds
        title = preview(rounds[0].text) if rounds else "Comparison"
        # Blind until the vote: the list must not name who answered.
        if comparison.labels_hidden:
            labels = "🙈 " + " · ".join(LETTERS[: len(comparison.columns)])
        else:
            labels = " · ".join(column.label for column in comparison.columns)
        return self.store.save_comparison(
            self.owner, comparison_id, f"{title} ({labels})", comparison.to_json()
        )

    def load_comparison(self, comparison_id: str, backend: ChatBackend) -> Comparison:
        if self.store is None:
            raise StoreUnavailable(
                "Saved comparisons cannot be read: the store is not open.", where=""
            ).coded("store_not_open")
        data = json.loads(self.store.load_comparison(self.owner, comparison_id))
        columns = data.get("columns", []) if isinstance(data, dict) else []
        return Comparison.from_dict(data, [backend] * len(columns))

    def comparison_picks(self) -> builtins.list[builtins.list[Pick]]:
        """The picks of each of this owner's saved comparisons (oldest first), for the tally."""
        if self.store is None:
            return []
        return [
            [Pick.model_validate(pick) for pick in json.loads(record).get("picks", [])]
            for record in self.store.comparison_records(self.owner)
        ]

    # --- test sets -----------------------------------------------------------------------------

    def save_test_set(self, test_set: TestSet) -> None:
        if self.store is not None:
            self.store.save_test_set(self.owner, test_set.name, json.dumps(list(test_set.prompts)))

    def test_sets(self) -> builtins.list[TestSet]:
        """This owner's test sets, most recently saved first (a stored one that no longer
        validates is skipped)."""
        if self.store is None:
            return []
        sets = []
        for name, prompts in self.store.list_test_sets(self.owner):
            try:
                sets.append(TestSet(name=name, prompts=tuple(json.loads(prompts))))
            except (ValueError, TypeError):
                continue
        return sets

    def save_test_run(self, record: TestRunRecord) -> None:
        if self.store is not None:
            self.store.save_test_run(self.owner, record.id, record.test_set.name, record.model_dump_json())

    def test_runs(self, test_set: str | None = None) -> builtins.list[TestRunRecord]:
        """This owner's runs (of `test_set`, or all), newest first."""
        if self.store is None:
            return []
        return [
            TestRunRecord.model_validate_json(r) for r in self.store.test_run_records(self.owner, test_set)
        ]

    def picks_by_conversation(self) -> builtins.list[builtins.list[Pick]]:
        """Every vote this owner cast, by the conversation it was cast in: a comparison's, or one
        prompt's of a test-set run (`core.compare.leaderboard.counted_votes` reads them)."""
        return [*self.comparison_picks(), *([pick] for run in self.test_runs() for pick in run.picks())]

    def conversation_counts(self) -> dict[str, int]:
        """How many conversations this owner has per persona id (read again like the listings)."""
        store = self.store
        if store is None:
            return {}
        return dict(
            self._listed(("counts",), lambda: builtins.list(store.conversation_counts(self.owner).items()))
        )

    # --- the list ----------------------------------------------------------------------------

    def list(
        self, *, persona_id: str | None = None, search: str | None = None, limit: int = 200
    ) -> builtins.list[ConversationSummary]:
        store = self.store
        if store is None:
            return []
        return self._listed(
            ("conversations", persona_id, search, limit),
            lambda: store.list(self.owner, persona_id=persona_id, search=search, limit=limit),
        )

    def _listed(
        self, asked: tuple[Any, ...], read: Callable[[], builtins.list[Listed]]
    ) -> builtins.list[Listed]:
        """`read()`, or the list it returned last time when this process has written nothing to
        the store since and it is under LISTING_REUSED_S old (a rerun that changed nothing
        queries nothing)."""
        assert self.store is not None
        writes, now = self.store.writes, time.monotonic()
        kept = self._listings.get(asked)
        if kept is not None and kept[0] == writes and now - kept[1] < LISTING_REUSED_S:
            return builtins.list(kept[2])
        listed = read()
        if len(self._listings) >= LISTINGS_KEPT:
            self._listings.clear()
        self._listings[asked] = (writes, now, listed)
        return builtins.list(listed)

    def rename(self, conversation_id: str, title: str) -> None:
        if self.store is not None:
            self.store.rename(self.owner, conversation_id, title)

    def delete(self, conversation_id: str) -> None:
        """Move a conversation to the trash (undo with `restore`); if it is open, close it."""
        if self.store is not None:
            self.store.delete(self.owner, conversation_id)
        session = self.sessions.pop(conversation_id, None)
        self.handles.pop(conversation_id, None)
        persona_id = session.conversation.persona_id if session else None
        if persona_id is not None and self.current.get(persona_id) == conversation_id:
            del self.current[persona_id]

    def restore(self, conversation_id: str, backend: ChatBackend) -> None:
        if self.store is not None:
            self.store.restore(self.owner, conversation_id)
        self.open(conversation_id, backend)
