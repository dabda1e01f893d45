"""Compare mode: one message to 2-4 columns at once, each its own chat session, replies streamed
concurrently, with each column's tokens, cost and speed.

    comparison = Comparison([
        Column.start(foodie, backend),
        Column.start(foodie, backend, model="gpt-4.1-mini"),   # same persona, another model
        Column.start(tutor, backend, label="Tutor"),
    ], blind=True)
    comparison.send("北京烤鸭怎么吃？")   # returns at once: one worker thread per column
    view = comparison.snapshot()          # the page reruns and draws this; it never touches a thread
    ...
    comparison.wait_for_change(view.version, timeout=0.2)   # or just rerun on a timer
    comparison.stop(1); comparison.retry(2)
    comparison.update_settings(1, context_budget=2000)    # between messages, per column
    pick = comparison.pick(0)             # blind mode: reveals the labels, records the preference
    # (or comparison.vote("tie")); core/compare/leaderboard.py rates the contestants from the picks

Threads and what they may touch:

- `send()` and `retry()` add the user's message to each column's session on the caller's
  (page) thread, then start one worker thread per column. From then until the column's state
  leaves "waiting"/"streaming", its `ChatSession` (and its conversation) is touched only by that
  worker: the worker consumes the session's reply iterator, calls `session.stop()` when asked to,
  and reads the figures off the session. The page reads columns only through `snapshot()` (or
  the `Column` read properties), which copy what the workers published under one lock. A
  column's session may be used directly again (settings, export, store) once `busy` is False.
- Sessions must not share a backend object unless it declares itself thread-safe
  (`backend.capabilities.thread_safe`). The OpenAI-compatible backend is (the SDK's client and
  its httpx connection pool are made for concurrent requests; its only mutable flag, dropping
  `stream_options` after a server rejects it, only ever goes one way), and so is the offline
  model (stateless). `ScriptedBackend` is not (a shared queue would hand the replies out in whatever
  order the workers ask): give each column its own. `Comparison` refuses columns that share any
  other backend object, and columns that share a session.
- `stop(i)` only raises a flag. The worker acts on it at the column's next chunk: it calls the
  session's `stop()`, which keeps what arrived (as an interrupted reply). A stream that is
  stalled inside a network read ends at its next chunk or at the backend's read timeout;
  until then the column's `stopping` is True.

A column's failure (typed `DashboardError`, kept with its data) stays in that column; the
others finish. Blind mode hides the labels (and the persona and model) until the user picks the
answer they prefer. Exports: `to_dict()`/`to_json()` (every column's conversation with its label
and figures; `from_dict()` reads it back) and `to_markdown()` (answers side by side per question).
"""

from __future__ import annotations

import copy
import functools
import html
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.chat.conversation import Conversation, Message, TrimEvent, Turn, utc_now
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.counting.model_info import ModelTable, load_model_table
from core.errors import ConversationImportError, ConversationStateError, DashboardError
from core.personas.persona import Persona
from core.providers.backends import ChatBackend
from core.safe_markdown import safe_markdown
from core.validation import describe_validation_error

logger = logging.getLogger(__name__)

#: Seconds a comparison a page draws may go undrawn (no `snapshot`) before its columns stop,
#: keeping what arrived: its tab closed or its visitor left the view, and the columns would
#: otherwise stream (and hold their replies in memory) for nobody. See `Comparison.unwatched_limit_s`.
UNWATCHED_S = 5.0
MIN_COLUMNS: Final = 2
MAX_COLUMNS: Final = 4
COMPARISON_FORMAT: Final = "persona-dashboard/comparison"
COMPARISON_VERSION: Final = 1
#: Backends that several columns may share (see the module docstring).
LETTERS: Final = "ABCD"
NO_PERSONA: Final = "(no persona)"

#: "idle": nothing sent yet; "waiting": sent, no text yet; "streaming": text arriving; then one of
#: "done", "failed" (the error is kept, with any text that arrived) or "stopped" (by the user).
#: "interrupted": the column was still replying when the comparison was saved (`to_dict`), so a
#: reload after a crash finds its text so far kept as an interrupted answer, to be asked again.
ColumnState = Literal["idle", "waiting", "streaming", "done", "failed", "stopped", "interrupted"]
#: A run that ended early with what arrived kept: `Comparison.retry` asks again.
ENDED_EARLY_STATES: Final = frozenset({"failed", "stopped", "interrupted"})
RUNNING_STATES: Final = frozenset({"waiting", "streaming"})

Scalar = str | int | float | bool | None


# --- Plain records: what the page draws, exports carry and the store may keep ---------------


class ErrorInfo(BaseModel):
    """A column's failure as plain data: the error's class, message and everything it carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The `core.errors` class name: "RateLimited", "AuthenticationFailed", "PromptTooLong", ...
    kind: str
    message: str
    retryable: bool = False
    status_code: int | None = None
    retry_after: float | None = None
    request_id: str | None = None
    #: Reply text that streamed before the failure (kept in the conversation, marked interrupted).
    partial_text: str = ""
    #: Any other data the error carries (e.g. PromptTooLong's `prompt_tokens`, `budget`).
    details: dict[str, Scalar] = {}
    #: The error's text in the page's language: `error.<code>` with these fields (core/errors.py).
    code: str = "generic"
    fields: dict[str, Scalar] = {}

    @classmethod
    def of(cls, error: DashboardError) -> ErrorInfo:
        common = {"message", "partial_text", "status_code", "request_id", "retry_after", "retryable", "code"}
        details = {
            name: value
            for name, value in vars(error).items()
            if name not in common
            and not name.startswith("_")
            and (value is None or isinstance(value, str | int | float | bool))
        }
        return cls(
            kind=type(error).__name__,
            message=str(getattr(error, "message", None) or error),
            retryable=bool(getattr(error, "retryable", False)),
            status_code=getattr(error, "status_code", None),
            retry_after=getattr(error, "retry_after", None),
            request_id=getattr(error, "request_id", None),
            partial_text=str(getattr(error, "partial_text", "") or ""),
            details=details,
            code=error.code,
            fields={
                name: value
                for name, value in error.fields.items()
                if value is None or isinstance(value, str | int | float | bool)
            },
        )


class RunFigures(BaseModel):
    """One column's answer to one message (one attempt: the send, or a retry): its tokens, time,
    cost and how it ended. Times are seconds from the moment the message was sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Which of the comparison's messages this answers (1-based, `Comparison.rounds`).
    round: int = Field(ge=1)
    #: 1 for the send, 2, 3, ... for retries of the same message.
    attempt: int = Field(1, ge=1)
    state: ColumnState
    context_budget: int = Field(ge=1)
    #: Prompt tokens as counted locally (known from the first token on) and as the server reported.
    prompt_tokens_counted: int | None = None
    prompt_tokens_reported: int | None = None
    reply_tokens_counted: int | None = None
    reply_tokens_reported: int | None = None
    #: "server", "local" (the offline model) or None (no usage: a stopped or broken-off reply).
    usage_source: Literal["server", "local"] | None = None
    #: US dollars from models.yaml; None while streaming, without a recorded reply, or for a
    #: model without a price.
    cost_usd: float | None = None
    time_to_first_token_s: float | None = None
    last_token_s: float | None = None
    #: Until the reply was recorded (or the failure known); None while running.
    total_s: float | None = None
    #: The conversation's turn and reply message this run recorded (None when it recorded none).
    turn_number: int | None = None
    reply_id: str | None = None
    finish_reason: str | None = None
    interrupted: bool = False
    #: What the context policy took out before this call.
    trimmed_messages: int = 0
    tokens_freed: int = 0
    error: ErrorInfo | None = None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def prompt_tokens(self) -> int | None:
        """As billed: the server's report, else the local count."""
        return (
            self.prompt_tokens_counted if self.prompt_tokens_reported is None else self.prompt_tokens_reported
        )

    @property
    def reply_tokens(self) -> int | None:
        """As billed: the server's report, else the local count."""
        return self.reply_tokens_counted if self.reply_tokens_reported is None else self.reply_tokens_reported


class Round(BaseModel):
    """One message sent to every column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1)
    text: str
    sent_at: datetime = Field(default_factory=utc_now)


class Candidate(BaseModel):
    """A column as it stood when a pick was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    persona_id: str | None
    model: str
    #: The settings that tell two columns of one persona on one model apart (budget, reply cap,
    #: policy, sampling), as `settings_summary()` writes them; what a leaderboard ranks.
    settings: str = ""


#: A vote on one message: one answer preferred, a tie, or every answer bad.
PickOutcome = Literal["preferred", "tie", "both_bad"]


class Pick(BaseModel):
    """The user's vote on one message: the answer preferred (with who it came from and who it
    beat), or a tie, or all bad (then the winner's fields are None)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, max_length=64)
    round: int = Field(ge=1)
    outcome: PickOutcome = "preferred"
    column: int | None = Field(ge=0, lt=MAX_COLUMNS)
    label: str | None
    persona_id: str | None
    model: str | None
    #: True when the labels were still hidden when the user chose.
    blind: bool
    candidates: tuple[Candidate, ...]
    at: datetime = Field(default_factory=utc_now)


# --- What the page reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnView:
    """One column as of a snapshot. Draw `messages` (the conversation as of the last message
    sent or answer recorded), then, while `running`, `text` as the reply in progress."""

    index: int
    #: "A", "B", ...: what the column is called while the labels are hidden.
    letter: str
    #: The column's label, or "Answer A" while the labels are hidden.
    label: str
    hidden: bool
    #: None while hidden (the system prompt in `messages` still tells the persona: do not draw it
    #: while `hidden`).
    persona_id: str | None
    model: str | None
    context_budget: int
    state: ColumnState
    #: The reply of the current (or last) run so far; once recorded, the recorded text.
    text: str
    #: Stop was asked for and the worker has not acted on it yet.
    stopping: bool
    #: Seconds since the message was sent (live while running; the total once finished).
    elapsed_s: float | None
    #: The current (or last) run, live while running.
    figures: RunFigures | None
    #: Every run, oldest first (the current one last).
    runs: tuple[RunFigures, ...]
    #: The typed failure of the current run (None after a reload: `figures.error` has its data).
    error: DashboardError | None
    can_retry: bool
    messages: tuple[Message, ...]
    turns: tuple[Turn, ...]
    trim_events: tuple[TrimEvent, ...]

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


@dataclass(frozen=True)
class ComparisonSnapshot:
    #: Grows with every change; `Comparison.wait_for_change(version)` waits for the next one.
    version: int
    busy: bool
    blind: bool
    labels_hidden: bool
    rounds: tuple[Round, ...]
    picks: tuple[Pick, ...]
    columns: tuple[ColumnView, ...]

    @property
    def can_pick(self) -> bool:
        """The latest message is answered everywhere and has no pick yet."""
        return (
            bool(self.rounds)
            and not self.busy
            and all(pick.round != len(self.rounds) for pick in self.picks)
            and any(_answered(view.figures, len(self.rounds)) for view in self.columns)
        )


def _answered(figures: RunFigures | None, round_number: int) -> bool:
    return figures is not None and figures.round == round_number and figures.reply_id is not None


# --- Columns ------------------------------------------------------------------------------------


@dataclass
class _Run:
    """A run in progress (or the last one), as the worker publishes it under the shared lock."""

    round: int
    attempt: int
    started: float
    context_budget: int
    stop_requested: threading.Event = field(default_factory=threading.Event)
    state: ColumnState = "waiting"
    chunks: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    last_token_at: float | None = None
    prompt_tokens_counted: int | None = None
    error: DashboardError | None = None
    #: Set by the worker when it is done; the figures then come from here.
    final: RunFigures | None = None
    _text: str = ""
    _joined: int = 0

    def text(self) -> str:
        if self._joined < len(self.chunks):
            self._text += "".join(self.chunks[self._joined :])
            self._joined = len(self.chunks)
        return self._text

    def live_figures(self) -> RunFigures:
        if self.final is not None:
            return self.final
        return RunFigures(
            round=self.round,
            attempt=self.attempt,
            state=self.state,
            context_budget=self.context_budget,
            prompt_tokens_counted=self.prompt_tokens_counted,
            time_to_first_token_s=_since(self.first_token_at, self.started),
            last_token_s=_since(self.last_token_at, self.started),
        )


def _since(moment: float | None, start: float) -> float | None:
    return None if moment is None else max(moment - start, 0.0)


@dataclass(frozen=True)
class _Published:
    """Copies of a column's conversation, made by whoever owns the session at that moment."""

    messages: tuple[Message, ...]
    turns: tuple[Turn, ...]
    trim_events: tuple[TrimEvent, ...]
    persona_id: str | None
    model: str
    context_budget: int
    can_retry: bool
    can_regenerate: bool
    #: `Conversation.to_dict()`: what a save writes while a worker owns the session.
    record: dict[str, Any]

    @classmethod
    def of(cls, session: ChatSession) -> _Published:
        conversation = session.conversation
        return cls(
            record=conversation.to_dict(),
            messages=tuple(message.model_copy() for message in conversation.messages),
            turns=tuple(conversation.turns),  # a Turn is never changed once recorded
            trim_events=tuple(conversation.trim_events),
            persona_id=conversation.persona_id,
            model=conversation.model,
            context_budget=conversation.context_budget,
            can_retry=session.can_retry,
            can_regenerate=session.can_regenerate,
        )


@dataclass(frozen=True)
class _ColumnState:
    """A column as `Comparison.to_dict` found it; `record()` writes it."""

    label: str
    published: _Published
    runs: tuple[RunFigures, ...]
    #: The figures so far of a run still going, and its text so far.
    running: RunFigures | None
    text_so_far: str

    def record(self) -> dict[str, Any]:
        """A run still going is written as a crash would leave it: the question pending and the
        text so far kept as an interrupted answer (state "interrupted")."""
        conversation, runs = self.published.record, list(self.runs)
        if self.running is not None:
            interrupted = self.running.model_copy(update={"state": "interrupted", "interrupted": True})
            if self.text_so_far:
                # The published record is the conversation as sent, its question pending.
                kept = Conversation.from_dict(conversation)
                turn = kept.add_assistant(self.text_so_far, None, interrupted=True)
                conversation = kept.to_dict()
                interrupted = interrupted.model_copy(
                    update={"turn_number": turn.number, "reply_id": turn.reply_id}
                )
            runs.append(interrupted)
        return {
            "label": self.label,
            "persona_id": self.published.persona_id,
            "model": self.published.model,
            "conversation": copy.deepcopy(conversation),  # the published record stays as it is
            "runs": [figures.model_dump(mode="json") for figures in runs],
        }


class Column:
    """One column: its own `ChatSession` (a persona, or the same persona with another model,
    budget or policy) and a label. Read it through the properties (thread-safe) or a snapshot."""

    def __init__(self, session: ChatSession, label: str | None = None) -> None:
        self.session = session
        self.label = label or default_label(session)
        #: The comparison's lock (each column has its own until it joins one).
        self._lock = threading.Condition()
        self._run: _Run | None = None
        self._runs: tuple[RunFigures, ...] = ()
        self._published = _Published.of(session)

    @classmethod
    def start(
        cls, persona: Persona, backend: ChatBackend, *, label: str | None = None, **settings: Any
    ) -> Column:
        """A new conversation with `persona`, with `settings` (model, context_budget,
        max_reply_tokens, context_policy, sampling) changed from the persona's, validated."""
        session = ChatSession.start(persona, backend)
        if settings:
            session.update_settings(**settings)
        return cls(session, label)

    # --- reading (any thread) ----------------------------------------------------------------

    @property
    def state(self) -> ColumnState:
        with self._lock:
            return self._state()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._state() in RUNNING_STATES

    @property
    def text_so_far(self) -> str:
        with self._lock:
            return self._text()

    @property
    def error(self) -> DashboardError | None:
        with self._lock:
            return self._run.error if self._run is not None else None

    @property
    def figures(self) -> RunFigures | None:
        """The current (or last) run's figures."""
        with self._lock:
            return self._figures()

    @property
    def runs(self) -> tuple[RunFigures, ...]:
        with self._lock:
            return self._all_runs()

    # --- under the lock ----------------------------------------------------------------------

    def _running(self) -> _Run | None:
        run = self._run
        return run if run is not None and run.final is None else None

    def _state(self) -> ColumnState:
        if (run := self._running()) is not None:
            return run.state
        return self._runs[-1].state if self._runs else "idle"

    def _figures(self) -> RunFigures | None:
        if (run := self._running()) is not None:
            return run.live_figures()
        return self._runs[-1] if self._runs else None

    def _all_runs(self) -> tuple[RunFigures, ...]:
        if (run := self._running()) is not None:
            return (*self._runs, run.live_figures())
        return self._runs

    def _retry_kind(self) -> Literal["retry", "regenerate"] | None:
        """How `Comparison.retry()` would ask again, or None when it cannot."""
        if self._state() in RUNNING_STATES:
            return None
        if self._published.can_retry:
            return "retry"
        last = self._runs[-1] if self._runs else None
        if (
            last is not None
            and last.state in ENDED_EARLY_STATES
            and last.reply_id is not None
            and self._published.can_regenerate
            and self._published.messages[-1].id == last.reply_id
        ):
            return "regenerate"
        return None

    def _text(self) -> str:
        if self._run is not None:
            return self._run.text()
        last = self._runs[-1] if self._runs else None
        if last is None or last.reply_id is None:
            return ""
        return next((m.content for m in self._published.messages if m.id == last.reply_id), "")


def settings_summary(settings: ChatSettings) -> str:
    """What tells two columns of one persona on one model apart, in a few words."""
    parts = [f"budget {settings.context_budget:,}", f"reply cap {settings.max_reply_tokens:,}"]
    parts.append(settings.context_policy)
    sampling = settings.sampling.model_dump(exclude_none=True)
    parts += [f"{name} {value}" for name, value in sorted(sampling.items())]
    return " · ".join(parts)


def _vote_cell(pick: Pick, labels: Sequence[str]) -> str:
    if pick.column is not None:
        return labels[pick.column]
    return {"tie": "tie", "both_bad": "all bad"}.get(pick.outcome, pick.outcome)


def default_label(session: ChatSession) -> str:
    conversation = session.conversation
    return f"{conversation.persona_id or 'Chat'} · {conversation.model}"


@functools.cache
def _default_prices() -> ModelTable:
    try:
        return load_model_table()
    except DashboardError as exc:
        logger.warning("No prices for the comparison's cost figures: %s", exc)
        return ModelTable({})


# --- The comparison ---------------------------------------------------------------------------


class Comparison:
    """2 to 4 columns that are sent the same messages; see the module docstring."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        blind: bool = False,
        model_table: ModelTable | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not MIN_COLUMNS <= len(columns) <= MAX_COLUMNS:
            raise ConversationStateError(
                f"A comparison has {MIN_COLUMNS} to {MAX_COLUMNS} columns, not {len(columns)}."
            )
        if len({id(column.session) for column in columns}) < len(columns):
            raise ConversationStateError("Each column needs its own chat session.")
        backends = [column.session.backend for column in columns]
        for backend in backends:
            shared = sum(other is backend for other in backends) > 1
            if shared and not backend.capabilities.thread_safe:
                raise ConversationStateError(
                    f"Columns share a {type(backend).__name__}, which is not thread-safe: "
                    "give each column its own."
                )
        self.columns: tuple[Column, ...] = tuple(columns)
        self.blind = blind
        self._prices = model_table if model_table is not None else _default_prices()
        self._clock = clock
        #: When a page last drew the comparison (`snapshot`) or sent to it.
        self._watched_at = clock()
        #: Set (to UNWATCHED_S) by whoever draws the comparison on a page: its columns stop when
        #: it has not been drawn for this long. None (a test set's, waited on in code): never.
        self.unwatched_limit_s: float | None = None
        #: Set by whoever saves the comparison (the application service): called, never under the
        #: lock, with True once a message is in every column that is sent it and before their calls
        #: start, and when a column ends (save now), and with False on a worker after each chunk (a
        #: draft of the text so far: throttle it). A failing hook is logged; the columns go on.
        self.on_progress: Callable[[bool], None] | None = None
        self._lock = threading.Condition()
        #: Serializes the page-side calls that start runs or change the record (send, retry, pick).
        self._control = threading.RLock()
        self._version = 0
        self._revealed = False
        self._rounds: list[Round] = []
        self._picks: list[Pick] = []
        labels = [column.label for column in columns]
        for index, column in enumerate(self.columns):
            if column.busy:
                raise ConversationStateError("A column joined a comparison while it was replying.")
            column._lock = self._lock
            if labels.count(column.label) > 1:
                column.label = f"{column.label} ({LETTERS[index]})"

    # --- reading -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while any column is waiting for or streaming its reply."""
        with self._lock:
            return self._busy()

    @property
    def version(self) -> int:
        """Grows with every change (as `snapshot().version`); reading it is not drawing it."""
        with self._lock:
            return self._version

    @property
    def labels_hidden(self) -> bool:
        return self.blind and not self._revealed

    @property
    def rounds(self) -> tuple[Round, ...]:
        with self._lock:
            return tuple(self._rounds)

    @property
    def picks(self) -> tuple[Pick, ...]:
        with self._lock:
            return tuple(self._picks)

    def snapshot(self) -> ComparisonSnapshot:
        """Every column's state, text and figures, copied at one moment; safe to keep and draw."""
        now = self._clock()
        with self._lock:
            self._watched_at = now
            hidden = self.labels_hidden
            return ComparisonSnapshot(
                version=self._version,
                busy=self._busy(),
                blind=self.blind,
                labels_hidden=hidden,
                rounds=tuple(self._rounds),
                picks=tuple(self._picks),
                columns=tuple(self._view(index, hidden, now) for index in range(len(self.columns))),
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no column is running (at most `timeout` seconds); True when none is."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy(), timeout)

    def wait_for_change(self, version: int, timeout: float | None = None) -> int:
        """Wait until something changed since snapshot `version` (a chunk, a state), at most
        `timeout` seconds; the current version."""
        with self._lock:
            self._lock.wait_for(lambda: self._version != version, timeout)
            return self._version

    # --- sending -----------------------------------------------------------------------------

    def send(self, text: str) -> int:
        """Send `text` to every column at once; returns its round number without waiting.

        Raises `ConversationStateError` for an empty message or while a column is still
        replying (stop or wait for it first)."""
        if not text.strip():
            raise ConversationStateError("An empty message cannot be sent.").coded("empty_message")
        self._watched_at = self._clock()
        with self._control:
            with self._lock:
                if self._busy():
                    raise ConversationStateError(
                        "The columns are still replying: stop them or wait for them first."
                    ).coded("columns_replying")
                number = len(self._rounds) + 1
                self._rounds.append(Round(number=number, text=text))
            started = self._clock()
            replies = [column.session.send(text) for column in self.columns]  # lazy: no call yet
            runs = [self._publish_run(column, number, 1, started) for column in self.columns]
            self._progress(True)  # the question is saved before any column calls the model
            for column, run, reply in zip(self.columns, runs, replies, strict=True):
                self._launch(column, run, reply)
            return number

    def retry(self, index: int) -> None:
        """Ask column `index` again, the others untouched: its unanswered message after a refused
        call (the session's `retry()`), or, after a reply that broke off or was stopped, the same
        message with the partial answer set aside (the session's `regenerate()`)."""
        column = self._column(index)
        with self._control:
            with self._lock:
                if column._state() in RUNNING_STATES:
                    raise ConversationStateError(f"Column {LETTERS[index]} is still replying.").coded(
                        "column_replying", letter=LETTERS[index]
                    )
                last = column._figures()
                how = column._retry_kind()
            if how is None:
                raise ConversationStateError(
                    f"Column {LETTERS[index]} has no failed answer to ask again."
                ).coded("column_nothing_to_retry", letter=LETTERS[index])
            number = last.round if last is not None else max(len(self._rounds), 1)
            attempt = last.attempt + 1 if last is not None and last.round == number else 1
            reply = column.session.retry() if how == "retry" else column.session.regenerate()
            run = self._publish_run(column, number, attempt, self._clock())
            self._progress(True)
            self._launch(column, run, reply)

    def stop(self, index: int) -> bool:
        """Ask column `index` to stop; it keeps what arrived. False when it was not running."""
        column = self._column(index)
        with self._lock:
            run = column._run
            if run is None or run.state not in RUNNING_STATES or run.stop_requested.is_set():
                return False
            run.stop_requested.set()
            self._changed()
            return True

    def stop_all(self) -> None:
        for index in range(len(self.columns)):
            self.stop(index)

    # --- changing a column between messages -----------------------------------------------------

    def update_settings(self, index: int, **changes: Any) -> None:
        """Change column `index`'s settings (model, context_budget, max_reply_tokens,
        context_policy, sampling; validated) for its next call. Not while it is replying."""
        column = self._column(index)
        with self._control:
            self._refuse_while_running(column, index)
            column.session.update_settings(**changes)
            self._republish(column)

    def use_backend(self, backend: ChatBackend, *, index: int | None = None) -> None:
        """Talk to `backend` from the next call on, in column `index` or in every column (the
        user changed the connection). A backend given to several columns must be thread-safe."""
        targets = range(len(self.columns)) if index is None else [index]
        with self._control:
            for target in targets:
                self._refuse_while_running(self._column(target), target)
            others = [c.session.backend for i, c in enumerate(self.columns) if i not in targets]
            shared = len(targets) > 1 or any(other is backend for other in others)
            if shared and not backend.capabilities.thread_safe:
                raise ConversationStateError(
                    f"A {type(backend).__name__} is not thread-safe: give each column its own."
                )
            for target in targets:
                self.columns[target].session.backend = backend

    # --- blind mode and picks ------------------------------------------------------------------

    @classmethod
    def blind_pair(
        cls, first: Column, second: Column, *, rng: random.Random | None = None, **options: Any
    ) -> Comparison:
        """Two columns in random order with their labels hidden until the vote: a blind pair.
        The same pair answers every message of the comparison."""
        pair = [first, second]
        (rng or random.SystemRandom()).shuffle(pair)
        return cls(pair, blind=True, **options)

    def pick(self, index: int) -> Pick:
        """Record column `index`'s answer to the latest message as the preferred one, and reveal
        the labels. One pick per message, once every column has finished."""
        return self.vote("preferred", index)

    def vote(self, outcome: PickOutcome, index: int | None = None) -> Pick:
        """Record a vote on the latest message: column `index`'s answer preferred, or a tie, or
        all bad (no index); then reveal the labels. One vote per message, once every column has
        finished."""
        if (outcome == "preferred") != (index is not None):
            raise ConversationStateError("Name the preferred column, and only for a preferred answer.")
        column = self._column(index) if index is not None else None
        with self._control, self._lock:
            if not self._rounds:
                raise ConversationStateError("Nothing has been asked yet.").coded("nothing_asked")
            if self._busy():
                raise ConversationStateError("Pick an answer once every column has finished.").coded(
                    "pick_after_all_finished"
                )
            number = len(self._rounds)
            if any(pick.round == number for pick in self._picks):
                raise ConversationStateError("An answer to this message has already been picked.").coded(
                    "already_picked"
                )
            if column is not None and index is not None and not _answered(column._figures(), number):
                raise ConversationStateError(
                    f"Column {LETTERS[index]} has no answer to this message to pick."
                ).coded("column_no_answer", letter=LETTERS[index])
            candidates = tuple(
                Candidate(
                    label=c.label,
                    persona_id=c._published.persona_id,
                    model=c._published.model,
                    settings=settings_summary(c.session.settings),
                )
                for c in self.columns
            )
            pick = Pick(
                round=number,
                outcome=outcome,
                column=index,
                label=column.label if column else None,
                persona_id=column._published.persona_id if column else None,
                model=column._published.model if column else None,
                blind=self.labels_hidden,
                candidates=candidates,
            )
            self._picks.append(pick)
            self._revealed = True
            self._changed()
            return pick

    def reveal(self) -> None:
        """Show the labels without picking."""
        with self._lock:
            self._revealed = True
            self._changed()

    # --- export --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every column's conversation (`Conversation.to_dict()`) with its label and figures, the
        messages sent and the picks. Complete even in blind mode.

        Any thread, at any moment: a column still replying is written as it would be after a
        crash, its question pending and the text so far as an interrupted answer (state
        "interrupted"), which is what `from_dict` then reads back."""
        with self._lock:
            columns = [self._column_state(column) for column in self.columns]
            record = {
                "format": COMPARISON_FORMAT,
                "version": COMPARISON_VERSION,
                "blind": self.blind,
                "revealed": self._revealed,
                "rounds": [r.model_dump(mode="json") for r in self._rounds],
                "picks": [p.model_dump(mode="json") for p in self._picks],
            }
        # Rebuilding a conversation costs ~10 ms per column: not under the lock the workers need.
        return {**record, "columns": [column.record() for column in columns]}

    def _column_state(self, column: Column) -> _ColumnState:
        """Under the lock: what `to_dict` writes of a column, from what was last published (the
        session itself may be a worker's)."""
        published = column._published
        run = column._running()
        return _ColumnState(
            label=column.label,
            published=published,
            runs=column._runs,
            running=run.live_figures() if run is not None else None,
            text_so_far=run.text() if run is not None else "",
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        backends: Sequence[ChatBackend],
        *,
        model_table: ModelTable | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> Comparison:
        """Rebuild a comparison from `to_dict()` output, one backend per column (in order)."""
        try:
            record = _ComparisonRecord.model_validate(data)
        except ValidationError as exc:
            raise ConversationImportError(
                f"This is not a comparison export: {describe_validation_error(exc)}"
            ) from None
        rounds = len(record.rounds)
        problems: list[str] = []
        if [r.number for r in record.rounds] != list(range(1, rounds + 1)):
            problems.append(f"its messages are not numbered 1 to {rounds}")
        problems += [
            f"pick {pick.id} names column {(pick.column or 0) + 1} or message {pick.round}, "
            "which do not exist"
            for pick in record.picks
            if (pick.column or 0) >= len(record.columns) or pick.round > rounds
        ]
        problems += [
            f"column {LETTERS[i]} has a run for message {run.round}, which does not exist"
            for i, stored in enumerate(record.columns)
            for run in stored.runs
            if run.round > rounds
        ]
        if problems:
            raise ConversationImportError(f"This comparison export is not consistent: {problems[0]}.")
        if len(backends) != len(record.columns):
            raise ConversationStateError(
                f"The comparison has {len(record.columns)} columns but {len(backends)} backends were given."
            )
        columns = []
        for stored, backend in zip(record.columns, backends, strict=True):
            column = Column(ChatSession(Conversation.from_dict(stored.conversation), backend), stored.label)
            column._runs = tuple(stored.runs)
            columns.append(column)
        comparison = cls(columns, blind=record.blind, model_table=model_table, clock=clock)
        comparison._revealed = record.revealed
        comparison._rounds = list(record.rounds)
        comparison._picks = list(record.picks)
        for column, stored in zip(columns, record.columns, strict=True):
            column.label = stored.label
        return comparison

    def to_markdown(self, title: str = "Comparison") -> str:
        """The answers side by side, one row per message, then each answer's figures. Labels stay
        hidden while they are hidden on the page. Not while a column is running."""
        with self._control, self._lock:
            self._refuse_while_busy()
            hidden = self.labels_hidden
            labels = [markdown_cell(self._label(index, hidden)) for index in range(len(self.columns))]
            lines = [f"# {markdown_cell(title)}", ""]
            if hidden:
                lines += ["_Blind comparison: the labels are hidden until an answer is picked._", ""]
            lines += [
                _row(["#", "Message", *labels]),
                _row(["---:", "---", *["---"] * len(labels)]),
            ]
            for round_ in self._rounds:
                answers = [self._answer_cell(column, round_.number) for column in self.columns]
                lines.append(_row([str(round_.number), markdown_cell(round_.text), *answers]))
            picked = {pick.round: pick for pick in self._picks}
            if picked:
                lines += [
                    "",
                    "Picked: "
                    + "; ".join(f"#{n}: {_vote_cell(pick, labels)}" for n, pick in sorted(picked.items())),
                ]
            lines += [
                "",
                "## Figures",
                "",
                _row(
                    ["#", "Column", "State", "Prompt tokens", "Reply tokens", "First token", "Total", "Cost"]
                ),
                _row(["---:", "---", "---", "---:", "---:", "---:", "---:", "---:"]),
            ]
            for round_ in self._rounds:
                for index, column in enumerate(self.columns):
                    run = _last_run(column._runs, round_.number)
                    if run is not None:
                        lines.append(_row([str(round_.number), labels[index], *_figure_cells(run)]))
            # Images made links on the whole document, as a viewer parses it.
            return safe_markdown("\n".join(lines) + "\n")

    # --- internals ---------------------------------------------------------------------------

    def _column(self, index: int) -> Column:
        if not 0 <= index < len(self.columns):
            raise ConversationStateError(f"There is no column {index} (there are {len(self.columns)}).")
        return self.columns[index]

    def _busy(self) -> bool:
        return any(column._state() in RUNNING_STATES for column in self.columns)

    def _refuse_while_running(self, column: Column, index: int) -> None:
        if column.busy:
            raise ConversationStateError(f"Column {LETTERS[index]} is still replying.").coded(
                "column_replying", letter=LETTERS[index]
            )

    def _republish(self, column: Column) -> None:
        """On the page thread, with the column idle: show the session's current state."""
        published = _Published.of(column.session)
        with self._lock:
            column._published = published
            self._changed()

    def _refuse_while_busy(self) -> None:
        if self._busy():
            raise ConversationStateError("Wait until every column has finished its reply.").coded(
                "wait_for_columns"
            )

    def _changed(self) -> None:
        """Under the lock: something a snapshot shows changed."""
        self._version += 1
        self._lock.notify_all()

    def _label(self, index: int, hidden: bool) -> str:
        return f"Answer {LETTERS[index]}" if hidden else self.columns[index].label

    def _answer_cell(self, column: Column, round_number: int) -> str:
        """Under the lock, with no column running: the column's answer to one message."""
        run = _last_run(column._runs, round_number)
        if run is None:
            return "—"
        answer = ""
        if run.reply_id is not None:
            answer = column.session.conversation.message(run.reply_id).content
        cell = markdown_cell(answer)
        if run.state == "stopped":
            cell += " _(stopped)_"
        elif run.error is not None:
            note = f"{run.error.kind}: {run.error.message}"
            cell += f"{' ' if cell else ''}_({'broke off' if cell else 'failed'}: {markdown_cell(note)})_"
        return cell

    def _view(self, index: int, hidden: bool, now: float) -> ColumnView:
        column = self.columns[index]
        run = column._run
        published = column._published
        state = column._state()
        figures = column._figures()
        if run is not None and run.final is None:
            elapsed: float | None = max(now - run.started, 0.0)
        else:
            elapsed = figures.total_s if figures is not None else None
        return ColumnView(
            index=index,
            letter=LETTERS[index],
            label=self._label(index, hidden),
            hidden=hidden,
            persona_id=None if hidden else published.persona_id,
            model=None if hidden else published.model,
            context_budget=published.context_budget,
            state=state,
            text=column._text(),
            stopping=run is not None and run.final is None and run.stop_requested.is_set(),
            elapsed_s=elapsed,
            figures=figures,
            runs=column._all_runs(),
            error=run.error if run is not None else None,
            can_retry=column._retry_kind() is not None,
            messages=published.messages,
            turns=published.turns,
            trim_events=published.trim_events,
        )

    def _publish_run(self, column: Column, number: int, attempt: int, started: float) -> _Run:
        """On the page thread, once the session has the user's message: publish it with a new run
        (waiting), before the session is handed to a worker (`_launch`)."""
        published = _Published.of(column.session)
        run = _Run(round=number, attempt=attempt, started=started, context_budget=published.context_budget)
        with self._lock:
            column._run = run
            column._published = published
            self._changed()
        return run

    def _launch(self, column: Column, run: _Run, reply: Iterator[str]) -> None:
        """Hand the session to a worker that consumes `reply` (its call starts there)."""
        index = self.columns.index(column)
        worker = threading.Thread(
            target=self._work,
            args=(column, run, reply),
            name=f"compare-{LETTERS[index]}-{run.round}.{run.attempt}",
            daemon=True,
        )
        worker.start()

    def _work(self, column: Column, run: _Run, reply: Iterator[str]) -> None:
        """The worker: the only code touching `column.session` until `run.final` is set."""
        session = column.session
        conversation = session.conversation
        turns_before, trims_before = len(conversation.turns), len(conversation.trim_events)
        error: DashboardError | None = None
        stopped = False
        try:
            try:
                for chunk in reply:
                    now = self._clock()
                    with self._lock:
                        if run.first_token_at is None:
                            run.first_token_at = now
                            run.state = "streaming"
                            # The policy has fitted the conversation: this is the prompt as sent.
                            run.prompt_tokens_counted = conversation.prompt_tokens
                        run.chunks.append(chunk)
                        run.last_token_at = now
                        limit = self.unwatched_limit_s
                        unwatched = limit is not None and now - self._watched_at > limit
                        self._changed()
                    if unwatched:  # its tab closed, or its visitor left: nobody reads the rest
                        run.stop_requested.set()
                    if run.stop_requested.is_set():
                        session.stop()
                        stopped = True
                        break
                    self._progress(False)
            finally:
                close = getattr(reply, "close", None)
                if callable(close):
                    close()
        except DashboardError as exc:
            error = exc
        except Exception as exc:
            logger.exception("Column %s failed unexpectedly", column.label)
            error = DashboardError(f"This column failed unexpectedly ({type(exc).__name__}: {exc}).")
            error.__cause__ = exc
        finally:
            # Always leave the column finished, whatever happened (even a BaseException).
            self._finish(column, run, turns_before, trims_before, error, stopped)
            self._progress(True)

    def _progress(self, now: bool) -> None:
        """Tell `on_progress` (see `__init__`); never under the lock."""
        hook = self.on_progress
        if hook is None:
            return
        try:
            hook(now)
        except Exception:
            logger.exception("Saving the comparison's progress failed")

    def _finish(
        self,
        column: Column,
        run: _Run,
        turns_before: int,
        trims_before: int,
        error: DashboardError | None,
        stopped: bool,
    ) -> None:
        ended = self._clock()
        session = column.session
        conversation = session.conversation
        turn = conversation.turns[-1] if len(conversation.turns) > turns_before else None
        trims = conversation.trim_events[trims_before:]
        state: ColumnState = "failed" if error is not None else "stopped" if stopped else "done"
        if error is None and turn is None and not stopped:
            state = "failed"  # the stream ended with nothing recorded (cannot happen with ChatSession)
        recorded: dict[str, Any] = {
            "context_budget": conversation.context_budget,
            # Nothing recorded: the prompt as counted for the call (or for the refusal to send it).
            "prompt_tokens_counted": conversation.prompt_tokens,
        }
        text = None
        if turn is not None:
            text = conversation.message(turn.reply_id).content if turn.reply_id else None
            info = self._prices.lookup(turn.model)
            recorded = {
                "context_budget": turn.context_budget,
                "prompt_tokens_counted": turn.counted_prompt_tokens,
                "prompt_tokens_reported": turn.reported_prompt_tokens,
                "reply_tokens_counted": turn.counted_completion_tokens,
                "reply_tokens_reported": turn.reported_completion_tokens,
                "usage_source": turn.usage_source,
                "cost_usd": info.cost(turn.prompt_tokens, turn.reply_tokens) if info is not None else None,
                "turn_number": turn.number,
                "reply_id": turn.reply_id,
                "finish_reason": turn.finish_reason,
                "interrupted": turn.interrupted,
            }
        final = RunFigures.model_validate(
            {
                "round": run.round,
                "attempt": run.attempt,
                "state": state,
                "time_to_first_token_s": _since(run.first_token_at, run.started),
                "last_token_s": _since(run.last_token_at, run.started),
                "total_s": max(ended - run.started, 0.0),
                "trimmed_messages": sum(len(event.dropped) for event in trims),
                "tokens_freed": sum(event.tokens_freed for event in trims),
                "error": ErrorInfo.of(error) if error is not None else None,
                **recorded,
            }
        )
        published = _Published.of(session)
        with self._lock:
            if text is not None and text != run.text():
                run.chunks[:] = [text]
                run._text, run._joined = "", 0
            run.error = error
            run.state = state
            run.final = final
            column._runs = (*column._runs, final)
            column._published = published
            self._changed()


def _last_run(runs: Sequence[RunFigures], round_number: int) -> RunFigures | None:
    return next((run for run in reversed(runs) if run.round == round_number), None)


# --- Markdown -------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PIPE = re.compile(r"(\\*)\|")


def markdown_cell(text: str) -> str:
    """`text` as one GitHub-flavoured Markdown table cell: raw HTML escaped (shown as text),
    pipes escaped (with any backslashes before them, so they stay literal), line breaks as <br>."""
    text = html.escape(text.strip(), quote=False)
    text = _PIPE.sub(lambda match: match.group(1) * 2 + "\\|", text)
    return _LINE_BREAK.sub("<br>", text)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _figure_cells(run: RunFigures) -> list[str]:
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    def tokens(counted: int | None, reported: int | None) -> str:
        if counted is None and reported is None:
            return "—"
        if reported is None or reported == counted:
            return f"{counted if counted is not None else reported:,}"
        return f"{counted:,} counted / {reported:,} reported" if counted is not None else f"{reported:,}"

    state = run.state if run.error is None else f"{run.state}: {run.error.kind}"
    return [
        markdown_cell(state),
        tokens(run.prompt_tokens_counted, run.prompt_tokens_reported),
        tokens(run.reply_tokens_counted, run.reply_tokens_reported),
        seconds(run.time_to_first_token_s),
        seconds(run.total_s),
        "—" if run.cost_usd is None else f"${run.cost_usd:.6f}",
    ]


class _ColumnRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200)
    persona_id: str | None = None
    model: str
    conversation: dict[str, Any]
    runs: list[RunFigures] = []


class _ComparisonRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["persona-dashboard/comparison"]
    version: Literal[1]
    blind: bool = False
    revealed: bool = False
    rounds: list[Round] = []
    picks: list[Pick] = []
    columns: list[_ColumnRecord] = Field(min_length=MIN_COLUMNS, max_length=MAX_COLUMNS)
