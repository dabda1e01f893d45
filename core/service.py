"""The application service: the one way a view changes a visitor's state or calls a model.

    service = VisitorService(workspace, backends, prices=load_model_table())
    service.configure(Deployment.from_settings(secrets, os.environ))   # every run: the deployer's policy
    service.connect(typed_key="", typed_base_url="")                    # which backend calls go to
    key, session = service.session_for(persona)
    for chunk in service.send(key, "北京烤鸭怎么吃？"):                    # limits checked, saved at the end
        ...
    service.take_notices()                                              # typed, for the page to translate

One `VisitorService` per browser session, kept in its session state. It owns the workspace (the
conversations, personas and comparisons, and saving them: one save path), the connection and its
backend, and the deployer's policy, enforced here once for every view: the models allowed (for the
chat, every compare column and the summarizer), the reply cap, the context budget, the message size
and the rate limits, which hold per workspace and for the whole deployment (`core.policy.limits.RATE_LIMITS`),
not per browser session. The limits apply to calls paid with the deployer's key.

A refusal is a `DashboardError` (raised, and kept as the session's error for the chat); anything
else worth telling the visitor is a `core.notices.Notice`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from core.chat import replay
from core.chat.conversation import MAX_IMPORT_BYTES, Conversation, not_imported
from core.chat.session import REQUEST_GOING_OUT, ChatSession
from core.chat.settings import ChatSettings
from core.compare.comparison import UNWATCHED_S, Column, Comparison, Pick, PickOutcome
from core.compare.testsets import TestRunRecord, TestSet, TestSetRun
from core.counting.model_info import ModelTable
from core.errors import (
    BaseUrlRefused,
    ConversationStateError,
    DashboardError,
    InvalidSettings,
    MessageTooLong,
    PersonaFileError,
)
from core.i18n import Language
from core.notices import Notice, error_notice
from core.personas.persona import Persona
from core.policy.limits import RATE_LIMITS, DeployerLimits, RateLimits
from core.policy.netguard import allowed_base_urls_from
from core.policy.owners import AccessMode, visitor_access
from core.providers.backends import ChatBackend
from core.providers.connection import Backends, Connection, resolve_connection
from core.store.database import ConversationSummary, StaleConversation
from core.store.workspace import Workspace

#: How often the text of a reply still streaming is saved (seconds): a crash loses at most this much.
REPLY_DRAFT_EVERY_S = 2.0

#: A replay's result (`VisitorService.replay`, `replay_policies`).
R = TypeVar("R")


@dataclass(frozen=True)
class Deployment:
    """The deployer's policy, read from Streamlit secrets and the environment (secrets win)."""

    #: How this visitor is treated: the deployer's ACCESS_MODE, or by where they are when unset.
    access_mode: AccessMode = "single-user"
    #: The visitor is on this machine (`core.policy.owners.is_local_visitor`).
    local_visitor: bool = False
    allowed_base_urls: tuple[str, ...] = ()
    limits: DeployerLimits = field(default_factory=DeployerLimits)
    secrets: Mapping[str, object] = field(default_factory=dict, repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(
        cls, secrets: Mapping[str, object], environ: Mapping[str, str], *, local_visitor: bool = False
    ) -> Deployment:
        """The policy for one visitor (`local_visitor`: on this machine). Raises `ConfigError`
        naming a malformed setting."""
        return cls(
            access_mode=visitor_access(environ, local=local_visitor).mode,
            local_visitor=local_visitor,
            allowed_base_urls=tuple(allowed_base_urls_from(secrets, environ)),
            limits=DeployerLimits.from_settings(secrets, environ),
            secrets=secrets,
            environ=environ,
        )

    @property
    def shared_with_strangers(self) -> bool:
        """The deployer chose single-user and this visitor is not on this machine: everyone with
        the link sees the same conversations, and the page must say so."""
        return self.access_mode == "single-user" and not self.local_visitor


TurnAction = Literal["send", "retry", "regenerate", "continue"]
#: The longest a started turn holds its caller (the page's rerun) for its request to go out.
REQUEST_WAIT_S = 0.25


class StartedReply(Iterator[str]):
    """A reply whose first chunk is fetched on a thread from the moment it is made (so its request
    goes out at once); iterating waits for that chunk, then reads the rest on the caller's thread.
    The turn's session is only ever advanced by one thread at a time."""

    def __init__(self, key: str, chunks: Iterator[str]) -> None:
        self.key = key
        self._chunks = chunks
        self._first: Future[str | None] = Future()
        self._first_taken = False
        # The caller (a callback, before the page's rerun) waits until the request goes out, or
        # the turn ends first, or REQUEST_WAIT_S (a summary or a server count may come first).
        self._going_out = threading.Event()
        threading.Thread(target=self._fetch_first, name="first-chunk", daemon=True).start()
        self._going_out.wait(REQUEST_WAIT_S)

    def _fetch_first(self) -> None:
        REQUEST_GOING_OUT.set(self._going_out.set)
        try:
            self._first.set_result(next(self._chunks, None))
        except BaseException as error:  # handed to the reader, raised there
            self._first.set_exception(error)
        finally:
            self._going_out.set()

    def __next__(self) -> str:
        if not self._first_taken:
            self._first_taken = True
            first = self._first.result()  # raises what the request raised
            if first is None:
                raise StopIteration
            return first
        return next(self._chunks)

    def close(self) -> None:
        """Stop reading; the turn keeps what arrived and is saved (at once, or as soon as the
        first chunk is in when it is still on its way)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            self._first.add_done_callback(lambda _: close())


@dataclass(frozen=True)
class ColumnChoice:
    """One compare column as the visitor set it up."""

    persona_id: str
    model: str
    context_budget: int


class VisitorService:
    """Everything one visitor does, through one object (see the module docstring)."""

    def __init__(
        self,
        workspace: Workspace,
        backends: Backends,
        *,
        prices: ModelTable,
        deployment: Deployment | None = None,
        rate_limits: RateLimits = RATE_LIMITS,
        clock: Callable[[], float] = time.monotonic,
        contended: Callable[[], bool] = replay.always,
    ) -> None:
        self.workspace = workspace
        #: Whether another visitor's work is running in this process now: a replay rests for it.
        self.contended = contended
        self.clock = clock
        self.backends = backends
        self.prices = prices
        self.deployment = deployment or Deployment()
        self.rate_limits = rate_limits
        self.connection = Connection()
        self.backend: ChatBackend = backends.for_connection(self.connection)
        #: Why the typed base URL is not used (None when it is, or none was typed).
        self.refused_base_url: BaseUrlRefused | None = None
        #: Why the store could not be opened (then everything is kept in memory only).
        self.store_error: DashboardError | None = None
        #: The last failed save (None after a save that worked), and whether it was a stale copy.
        self.store_problem: Notice | None = None
        self.stale = False
        #: (conversation id, title) of the last deleted conversation, for undo.
        self.deleted: tuple[str, str] | None = None
        #: The open comparison and its id in the store once saved.
        self.comparison: Comparison | None = None
        self.comparison_id: str | None = None
        self._saved_version = -1  # the open comparison's snapshot version last saved
        self._comparison_saved_at = float("-inf")  # and when (the service's clock)
        #: Held while the open comparison is saved: its columns' workers save it too.
        self._comparison_saving = threading.RLock()
        #: The running (or ended, not yet saved) test set.
        self.test_run: TestSetRun | None = None
        self._notices: list[Notice] = []
        self._replays: dict[tuple[Any, ...], replay.ReplayComparison] = {}
        self._policy_replays: dict[tuple[Any, ...], tuple[replay.PolicyOutcome, ...]] = {}

    # --- the deployment and the connection ---------------------------------------------------

    def configure(self, deployment: Deployment) -> None:
        """The deployer's policy for this run (it is read on every run, so a change applies)."""
        self.deployment = deployment

    @property
    def limits(self) -> DeployerLimits | None:
        """The deployer's limits when calls are paid with the deployer's key, else None."""
        return self.deployment.limits if self.connection.uses_deployer_key else None

    def connect(
        self, *, typed_key: str = "", typed_base_url: str = "", language: Language = "en"
    ) -> Connection:
        """Use the connection these typed values make with the deployer's settings. A refused base
        URL falls back to the deployer's own connection (`refused_base_url` says why); a malformed
        deployer setting raises `ConfigError`. The offline model answers in `language` (the page's)."""
        deployment = self.deployment
        settings: dict[str, Any] = {
            "typed_key": typed_key,
            "secrets": deployment.secrets,
            "environ": deployment.environ,
            "access_mode": deployment.access_mode,
            "allowed_base_urls": list(deployment.allowed_base_urls),
        }
        self.refused_base_url = None
        try:
            connection = resolve_connection(typed_base_url=typed_base_url, **settings)
        except BaseUrlRefused as error:
            self.refused_base_url = error
            connection = resolve_connection(**settings)
        self.connection = connection
        self.backend = self.backends.for_connection(connection, language)
        return connection

    # --- notices -----------------------------------------------------------------------------

    def notify(self, notice: Notice) -> None:
        self._notices.append(notice)

    def take_notices(self) -> list[Notice]:
        """The notices since the last call, oldest first (each is shown once)."""
        notices, self._notices = self._notices, []
        return notices

    # --- conversations -----------------------------------------------------------------------

    def session_for(self, persona: Persona) -> tuple[str, ChatSession, list[Notice]]:
        """The conversation open for `persona`, on the current backend, within the limits; a
        notice per setting the limits changed."""
        key, session = self.workspace.session_for(persona, self.backend)
        return key, session, self._within_limits(key, session)

    def session(self, key: str) -> ChatSession:
        return self.workspace.sessions[key]

    def open_session(self, persona_id: str) -> ChatSession | None:
        """The conversation open for `persona_id`, if one is (nothing is started)."""
        key = self.workspace.current.get(persona_id)
        return self.workspace.sessions.get(key) if key is not None else None

    def is_saved(self, key: str) -> bool:
        """True once the conversation is in the store (listed); False for a draft."""
        return self.workspace.is_saved(key)

    @property
    def saving(self) -> bool:
        """True when conversations are written to a store (False: kept in memory only)."""
        return self.workspace.store is not None

    def list_conversations(
        self, *, persona_id: str | None = None, search: str | None = None
    ) -> list[ConversationSummary]:
        """This visitor's conversations, newest first (raises the store's `DashboardError`)."""
        return self.workspace.list(persona_id=persona_id, search=search)

    @property
    def persona_errors(self) -> list[PersonaFileError]:
        """This visitor's saved personas that no longer pass the checks."""
        return self.workspace.persona_errors

    def new_conversation(self, persona: Persona) -> None:
        """Start a new conversation with `persona` (the one open before stays listed)."""
        self.workspace.new(persona, self.backend)

    def open_conversation(self, conversation_id: str) -> str | None:
        """Open a saved conversation; its persona id (None when it failed, with a notice)."""
        try:
            self.workspace.open(conversation_id, self.backend)
        except DashboardError as error:
            self.notify(error_notice("open_failed", error))
            return None
        return self.workspace.sessions[conversation_id].conversation.persona_id

    def rename(self, conversation_id: str, title: str) -> None:
        try:
            self.workspace.rename(conversation_id, title)
        except DashboardError as error:
            self.notify(error_notice("not_renamed", error))

    def delete(self, conversation_id: str, title: str) -> None:
        try:
            self.workspace.delete(conversation_id)
        except DashboardError as error:
            self.notify(error_notice("not_deleted", error))
            return
        self.deleted = (conversation_id, title)

    def undo_delete(self) -> None:
        if self.deleted is None:
            return
        conversation_id, title = self.deleted
        self.deleted = None
        try:
            self.workspace.restore(conversation_id, self.backend)
        except DashboardError as error:
            self.notify(error_notice("not_restored", error, title=title))

    def reload(self, key: str) -> None:
        """Read the conversation again after a stale write (another tab saved it since)."""
        self.workspace.reload(key, self.backend)
        self.store_problem, self.stale = None, False

    def import_conversation(
        self, data: bytes, file_name: str, *, personas: Mapping[str, Persona], fallback_persona_id: str
    ) -> str | None:
        """A conversation file becomes a new conversation (nothing is overwritten) and is opened;
        its persona id, or None when the file was refused (with a notice)."""
        try:
            if len(data) > MAX_IMPORT_BYTES:
                raise not_imported(
                    Notice(code="conversation_file_too_large", fields={"limit": MAX_IMPORT_BYTES})
                )
            conversation = Conversation.from_json(data)
            target = conversation.persona_id or fallback_persona_id
            if target not in personas:
                target = fallback_persona_id
            conversation.persona_id = target
            key = self.workspace.add_imported(conversation, self.backend)
        except DashboardError as error:
            self.notify(error_notice("import_failed", error, file=file_name))
            return None
        self._within_limits(key, self.workspace.sessions[key])
        self.notify(
            Notice(
                code="imported",
                level="success",
                fields={
                    "count": len(conversation.messages),
                    "file": file_name,
                    "persona": personas[target].name,
                },
            )
        )
        return target

    def save(self, key: str, *, reply_draft: str | None = None) -> None:
        """Write the conversation through to the store (the one save path), with `reply_draft`,
        the text so far of a reply still streaming. A failure becomes `store_problem` for the
        page to show; the conversation stays as it is, nothing is lost."""
        try:
            self.workspace.save(key, reply_draft=reply_draft)
        except StaleConversation as error:
            self.store_problem, self.stale = error_notice("stale", error), True
            # What this tab's visitor wrote is offered back once the conversation is reloaded.
            with contextlib.suppress(DashboardError):
                self.workspace.keep_unsent(key)
        except DashboardError as error:
            self.store_problem, self.stale = error_notice("store_unsaved", error), False
        else:
            self.store_problem, self.stale = None, False

    def take_unsent(self, key: str) -> str | None:
        """What the visitor wrote in a stale tab that could not be saved, once, when this
        conversation was opened or reloaded since: for the page to put back in the chat input."""
        return self.workspace.take_unsent(key)

    # --- settings, pins, summaries -----------------------------------------------------------

    def change_settings(self, key: str, **changes: Any) -> tuple[ChatSettings, list[Notice]]:
        """Change a conversation's settings (model, context_budget, max_reply_tokens,
        context_policy, ...) within the deployer's limits; saved when they changed. Returns the
        settings in force and a notice per limit that changed them."""
        session = self.workspace.sessions[key]
        before = session.settings
        try:
            session.update_settings(**changes)
        except InvalidSettings as error:  # the previous settings stay; the visitor is told why
            self.notify(error_notice("settings_refused", error))
            return before, []
        notes = self._within_limits(key, session, save=False)
        if session.settings is not before:
            self.save(key)
        return session.settings, notes

    def pin(self, key: str, pinned_ids: Sequence[str], candidates: Sequence[str]) -> bool:
        """Pin exactly `pinned_ids` among `candidates`; True when anything changed (and was saved)."""
        conversation = self.workspace.sessions[key].conversation
        chosen = set(pinned_ids)
        changed = False
        for message in conversation.messages:
            if message.id in candidates and message.pinned != (message.id in chosen):
                conversation.pin(message.id, message.id in chosen)
                changed = True
        if changed:
            self.save(key)
        return changed

    def edit_summary(self, key: str, text: str) -> None:
        """The visitor's version of the running summary (the model sees it from the next call).
        Raises `DashboardError` when it is refused (e.g. empty, or over its share of the budget)."""
        self.workspace.sessions[key].conversation.edit_summary(text)
        self.save(key)

    # --- turns -------------------------------------------------------------------------------

    def send(self, key: str, text: str) -> Iterator[str]:
        """Send `text` and return the reply's chunks; the turn is saved when they end (or fail, or
        stop). A refusal (message size, rate) raises before anything is sent; a message refused
        by the rate limit is kept, pending, for Retry."""
        session = self.workspace.sessions[key]
        self._within_limits(key, session)
        limits = self.limits
        if limits is not None and len(text) > limits.max_message_chars:
            error = MessageTooLong(length=len(text), limit=limits.max_message_chars)
            session.error = error
            raise error
        try:
            self._admit([session], text)
        except DashboardError as error:
            session.conversation.add_user(text)
            session.error = error
            self.save(key)
            raise
        chunks = session.send(text)  # the message is in the conversation now; the call starts lazily
        self.save(key)  # saved before the model is called: a crash mid-reply cannot lose it
        return self._saved(key, chunks)

    def retry(self, key: str) -> Iterator[str]:
        return self._turn(key, ChatSession.retry)

    def regenerate(self, key: str) -> Iterator[str]:
        return self._turn(key, ChatSession.regenerate)

    def continue_reply(self, key: str) -> Iterator[str]:
        return self._turn(key, ChatSession.continue_reply)

    def start(self, key: str, action: TurnAction, text: str = "") -> StartedReply | None:
        """Begin a turn now and return its reply with the request already on its way: the first
        chunk is fetched on a thread while the page draws (a chat input's or a button's callback
        calls this, so no page rerun comes before the request). None when the action does not
        apply (nothing to retry, ...) or was refused: the session holds the error."""
        session = self.workspace.sessions[key]
        try:
            if action == "send":
                reply = self.send(key, text)
            elif action == "retry" and session.can_retry:
                reply = self.retry(key)
            elif action == "regenerate" and session.can_regenerate:
                reply = self.regenerate(key)
            elif action == "continue" and session.can_continue:
                reply = self.continue_reply(key)
            else:
                return None
        except DashboardError:
            return None  # refused before anything was sent; the session holds the error
        return StartedReply(key, reply)

    def stop(self, key: str) -> None:
        """End the reply in progress, keep what arrived, and save it."""
        session = self.workspace.sessions.get(key)
        if session is not None:
            session.stop()
            self.save(key)

    def _turn(self, key: str, start: Callable[[ChatSession], Iterator[str]]) -> Iterator[str]:
        session = self.workspace.sessions[key]
        self._within_limits(key, session)
        try:
            self._admit([session])
        except DashboardError as error:
            session.error = error
            raise
        return self._saved(key, start(session))

    def _saved(self, key: str, chunks: Iterator[str]) -> Iterator[str]:
        """`chunks`, the reply so far saved as a draft at most every `REPLY_DRAFT_EVERY_S` while
        they stream (a crash keeps it), then the turn saved, however they end."""
        session = self.workspace.sessions[key]
        saved_at = self.clock()
        try:
            for chunk in chunks:
                yield chunk
                if self.clock() - saved_at >= REPLY_DRAFT_EVERY_S and (draft := session.partial_reply):
                    self.save(key, reply_draft=draft)
                    saved_at = self.clock()
        finally:
            self.workspace.sessions[key].stop()  # a consumer that walked away: keep what arrived
            self.save(key)

    # --- the deployer's policy ---------------------------------------------------------------

    def _within_limits(self, key: str, session: ChatSession, *, save: bool = True) -> list[Notice]:
        """Bring a conversation's settings within the deployer's limits (saved when changed);
        a notice per change. Also installs the summarizer's admission check."""
        session.backend = self.backend
        session.admit_summary = self._admit_summary
        limits = self.limits
        if limits is None:
            return []
        enforced, notes = limits.enforce(session.settings)
        if notes:
            session.update_settings(**enforced.model_dump())
            if save:
                self.save(key)
        return notes

    def _admit(self, sessions: Sequence[ChatSession], text: str = "") -> None:
        """Count one request per session against the rate limits (all or none)."""
        limits = self.limits
        if limits is None or not limits.rated:
            return
        tokens = sum(
            s.conversation.prompt_tokens
            + s.settings.max_reply_tokens
            + s.conversation.tokenizer.count_text(text)
            for s in sessions
        )
        self.rate_limits.admit(limits, self.workspace.owner, tokens=tokens, requests=len(sessions))

    def _admit_summary(self, session: ChatSession, prompt_tokens: int, reply_cap: int) -> None:
        """A summarizer call is a request on the deployer's key too; refused, the policy drops."""
        limits = self.limits
        if limits is not None and limits.rated:
            self.rate_limits.admit(limits, self.workspace.owner, tokens=prompt_tokens + reply_cap)

    # --- compare -----------------------------------------------------------------------------

    def start_comparison(
        self, personas: Mapping[str, Persona], choices: Sequence[ColumnChoice], *, blind: bool
    ) -> Comparison | None:
        """A new comparison of these columns, each within the limits (changes said as notices)."""
        return self._start(
            lambda: Comparison(self._columns(personas, choices), blind=blind, model_table=self.prices)
        )

    def start_blind_pair(
        self, personas: Mapping[str, Persona], first: ColumnChoice, second: ColumnChoice
    ) -> Comparison | None:
        """Two columns in random order, anonymous until the vote, for every message (a blind pair)."""
        return self._start(
            lambda: Comparison.blind_pair(*self._columns(personas, (first, second)), model_table=self.prices)
        )

    def _start(self, build: Callable[[], Comparison]) -> Comparison | None:
        try:
            comparison = build()
        except (DashboardError, ValueError) as error:
            self.notify(error_notice("comparison_not_started", error))
            return None
        self.close_comparison()
        self._watch(comparison, None)
        self._columns_within_limits(comparison, notify=True)
        return comparison

    def _watch(self, comparison: Comparison, comparison_id: str | None) -> None:
        """`comparison` is the open one, drawn by the compare page and saved as its columns go."""
        comparison.unwatched_limit_s = UNWATCHED_S
        comparison.on_progress = functools.partial(self._comparison_progress, comparison)
        with self._comparison_saving:
            self.comparison, self.comparison_id = comparison, comparison_id
            self._saved_version = comparison.version if comparison_id is not None else -1

    def _columns(self, personas: Mapping[str, Persona], choices: Sequence[ColumnChoice]) -> list[Column]:
        return [
            Column.start(
                persona,
                self.backend,
                label=f"{persona.avatar} {persona.name} · {choice.model}",
                model=choice.model,
                context_budget=choice.context_budget,
            )
            for choice in choices
            for persona in [personas[choice.persona_id]]
        ]

    def open_comparison(self, comparison_id: str) -> Comparison | None:
        try:
            comparison = self.workspace.load_comparison(comparison_id, self.backend)
        except DashboardError as error:
            self.notify(error_notice("comparison_not_opened", error))
            return None
        self.close_comparison()
        self._watch(comparison, comparison_id)
        return comparison

    def close_comparison(self) -> None:
        """Stop the open comparison's columns, saving what they have so far (kept interrupted)."""
        comparison = self.comparison
        if comparison is None:
            return
        with self._comparison_saving:
            if comparison.busy:
                self._save_comparison(comparison)
            comparison.on_progress = None
            self.comparison, self.comparison_id = None, None
        comparison.stop_all()

    def compare_send(self, text: str) -> None:
        """Send `text` to every column at once (one request each against the rate limits)."""
        comparison = self._open_comparison()
        limits = self._columns_within_limits(comparison)
        if limits is not None and len(text) > limits.max_message_chars:
            raise MessageTooLong(length=len(text), limit=limits.max_message_chars)
        self._admit([column.session for column in comparison.columns], text)
        comparison.send(text)

    def compare_retry(self, index: int) -> None:
        comparison = self._open_comparison()
        self._columns_within_limits(comparison)
        self._admit([comparison.columns[index].session])
        comparison.retry(index)

    def compare_stop(self, index: int) -> None:
        self._open_comparison().stop(index)

    def compare_pick(self, index: int) -> None:
        self.compare_vote("preferred", index)

    def compare_vote(self, outcome: PickOutcome, index: int | None = None) -> None:
        """Vote on the latest message (column `index` preferred, a tie, or all bad); reveals the
        labels and saves."""
        self._open_comparison().vote(outcome, index)
        self.save_comparison()

    def save_comparison(self) -> None:
        """Save the open comparison if it changed since it was last saved or opened (the one save
        path of a comparison: its columns' progress comes here too, `_comparison_progress`)."""
        self._save_comparison(self._open_comparison())

    def _comparison_progress(self, comparison: Comparison, now: bool) -> None:
        """`Comparison.on_progress`, on the page's thread or a column's worker: saved at once when
        `now` (a question about to be sent, a column that ended), else the answers so far as a
        draft at most every `REPLY_DRAFT_EVERY_S` (a crash then keeps them, interrupted)."""
        if now:
            self._save_comparison(comparison)
            return
        if self.clock() - self._comparison_saved_at < REPLY_DRAFT_EVERY_S:
            return
        # A draft never waits: when another column's thread is saving, that save is the draft.
        if not self._comparison_saving.acquire(blocking=False):
            return
        try:
            if self.clock() - self._comparison_saved_at >= REPLY_DRAFT_EVERY_S:  # not just saved
                self._save_comparison(comparison)
        finally:
            self._comparison_saving.release()

    def _save_comparison(self, comparison: Comparison) -> None:
        with self._comparison_saving:
            if comparison is not self.comparison or not comparison.rounds:
                return  # closed since (its last state was saved then), or nothing asked yet
            version = comparison.version
            if self.comparison_id is not None and version == self._saved_version:
                return
            self._comparison_saved_at = self.clock()
            try:
                self.comparison_id = self.workspace.save_comparison(self.comparison_id, comparison)
            except DashboardError as error:
                self.store_problem = error_notice("comparison_unsaved", error)
                return
            self._saved_version = version

    def saved_comparisons(self) -> list[tuple[str, str]]:
        return self.workspace.list_comparisons()

    def picks_by_conversation(self) -> list[list[Pick]]:
        """Every vote of this owner, by the conversation it was cast in (a comparison, or one
        prompt of a test-set run), for the leaderboard."""
        return self.workspace.picks_by_conversation()

    # --- test sets ---------------------------------------------------------------------------

    def save_test_set(self, test_set: TestSet) -> None:
        try:
            self.workspace.save_test_set(test_set)
        except DashboardError as error:
            self.store_problem = error_notice("test_set_unsaved", error)

    def test_sets(self) -> list[TestSet]:
        return self.workspace.test_sets()

    def test_runs(self, name: str) -> list[TestRunRecord]:
        """The runs of test set `name`, newest first."""
        return self.workspace.test_runs(name)

    def start_test_set(
        self, personas: Mapping[str, Persona], test_set: TestSet, choices: Sequence[ColumnChoice]
    ) -> TestSetRun:
        """Run every prompt of `test_set` against these columns (each prompt a fresh conversation
        per column), within the deployer's limits: every prompt's size is checked before anything
        is sent, every column's settings are held to the limits, and each prompt counts one
        request per column against the rate limits (a refused prompt is recorded as refused and
        the run goes on). Returns at once; `finish_test_set()` saves the record once it ended."""
        if self.test_run is not None and not self.test_run.finished:
            raise ConversationStateError("A test set is already running: cancel it or wait for it.").coded(
                "test_set_running"
            )
        limits = self.limits
        if limits is not None:
            longest = max(test_set.prompts, key=len)
            if len(longest) > limits.max_message_chars:
                raise MessageTooLong(length=len(longest), limit=limits.max_message_chars)
        self._columns(personas, choices)  # a choice that cannot start fails here, not in a worker
        self.save_test_set(test_set)

        def make_columns() -> list[Column]:
            columns = self._columns(personas, choices)
            for column in columns:
                column.session.admit_summary = self._admit_summary
                if limits is not None:
                    enforced, _ = limits.enforce(column.session.settings)
                    column.session.update_settings(**enforced.model_dump())
            return columns

        def admit(prompt: str, columns: Sequence[Column]) -> None:
            self._admit([column.session for column in columns], prompt)

        run = TestSetRun(test_set, make_columns, before_each=admit)
        self.test_run = run
        run.start()
        return run

    def cancel_test_set(self) -> None:
        if self.test_run is not None:
            self.test_run.cancel()

    def finish_test_set(self) -> TestRunRecord | None:
        """Once the running test set has ended: its record, saved (None while it runs)."""
        run = self.test_run
        if run is None or not run.finished:
            return None
        self.test_run = None
        record = run.result()
        try:
            self.workspace.save_test_run(record)
        except DashboardError as error:
            self.store_problem = error_notice("test_run_unsaved", error)
        return record

    def vote_on_test_result(
        self, record: TestRunRecord, prompt: int, outcome: PickOutcome, column: int | None = None
    ) -> TestRunRecord:
        """Cast (or change) the vote on one prompt's answers; saved; it feeds the leaderboard."""
        voted = record.vote(prompt, outcome, column)
        try:
            self.workspace.save_test_run(voted)
        except DashboardError as error:
            self.store_problem = error_notice("test_run_unsaved", error)
        return voted

    def _open_comparison(self) -> Comparison:
        if self.comparison is None:
            raise ConversationStateError("There is no comparison open.").coded("no_comparison")
        return self.comparison

    def _columns_within_limits(
        self, comparison: Comparison, *, notify: bool = False
    ) -> DeployerLimits | None:
        """Every column on the current backend and within the limits, before any of its calls."""
        if not comparison.busy:
            comparison.use_backend(self.backend)
        limits = self.limits
        for column in comparison.columns:
            column.session.admit_summary = self._admit_summary
        if limits is None:
            return None
        for index, column in enumerate(comparison.columns):
            enforced, notes = limits.enforce(column.session.settings)
            if notes:
                comparison.update_settings(index, **enforced.model_dump())
                for note in notes if notify else ():
                    self.notify(Notice(code="limit_applied", level="info", fields={"note": note}))
        return limits

    # --- what if -----------------------------------------------------------------------------

    def replay_policies(self, key: str, scenario: replay.Scenario) -> tuple[replay.PolicyOutcome, ...]:
        """Every policy replayed under `scenario` on its simulated prompt cache; the last result
        is kept, as `replay`'s, whose replay under the scenario's own policy is reused."""
        conversation = self.workspace.sessions[key].conversation
        return _last_result(
            self._policy_replays,
            _replay_key(key, conversation, scenario),
            lambda: replay.compare_policies(
                conversation,
                scenario,
                self.prices,
                known=self.replay(key, scenario).replayed,
                pace=replay.Pacer(contended=self.contended),
            ),
        )

    def replay(self, key: str, scenario: replay.Scenario) -> replay.ReplayComparison:
        """The open conversation replayed under `scenario` (no model is called); the last result
        is kept, so a rerun with the same scenario costs nothing."""
        conversation = self.workspace.sessions[key].conversation
        return _last_result(
            self._replays,
            _replay_key(key, conversation, scenario),
            lambda: replay.compare(
                conversation, scenario, self.prices, pace=replay.Pacer(contended=self.contended)
            ),
        )

    # --- personas ----------------------------------------------------------------------------

    def custom_personas(self) -> dict[str, Persona]:
        return self.workspace.custom_personas()

    def save_persona(self, persona: Persona) -> None:
        """Create or replace one of this visitor's personas; raises the store's `DashboardError`."""
        self.workspace.save_persona(persona)

    def conversation_counts(self) -> dict[str, int]:
        return self.workspace.conversation_counts()


def _replay_key(key: str, conversation: Conversation, scenario: replay.Scenario) -> tuple[Any, ...]:
    """What a replay's result depends on: the conversation as it stands and the scenario."""
    return (key, len(conversation.messages), len(conversation.turns), scenario)


#: Replays run one at a time in this process: each works at most `replay.REPLAY_SHARE` of the
#: time, and several at once would together hold the interpreter longer from other visitors.
#: Reentrant: the policies' replays reuse `VisitorService.replay`'s.
_ONE_REPLAY_AT_A_TIME = threading.RLock()


def _last_result(kept: dict[tuple[Any, ...], R], key: tuple[Any, ...], compute: Callable[[], R]) -> R:
    """The result kept for `key`, or `compute()`d (one replay at a time) and kept instead of the
    last one."""
    result = kept.get(key)
    if result is None:
        with _ONE_REPLAY_AT_A_TIME:
            result = compute()
        kept.clear()
        kept[key] = result
    return result
