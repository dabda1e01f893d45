"""One chat's history and settings, with a record of every turn and everything taken out of context.

The in-context messages always read: system, then user/assistant pairs, then at most one
pending user message. A context policy (`core.chat.context`) decides which pairs leave the context
before a call; messages that leave stay in `.messages` with their new state, and are never sent
again. Every message has a stable id; records name messages by id.

Each message is tokenized once, when it is added (and again only when the model's tokenizer
changes); the prompt total is kept as a running sum, so a turn costs the new messages, not the
history.
"""

from __future__ import annotations

import html
import json
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.chat.settings import DEFAULT_REPLY_CAP, MAX_CONTEXT_BUDGET, ChatSettings
from core.chat.summaries import SUMMARY_MESSAGE_COUNT, one_line, summary_messages, summary_tokens
from core.counting.calibration import Calibration, CalibrationRecord, SilentTruncation, silent_truncation
from core.counting.tokens import Tokenizer, tokenizer_for
from core.errors import ConversationImportError, ConversationStateError, InvalidSettings
from core.i18n import english
from core.notices import Notice, json_problem
from core.providers.backends import MAX_REPORTED_TOKENS, Usage
from core.safe_markdown import safe_markdown
from core.validation import field_path, problem_notices

Role = Literal["system", "user", "assistant"]

EXPORT_FORMAT: Final = "persona-dashboard/conversation"
EXPORT_VERSION: Final = 2
MAX_IMPORT_BYTES = 5 * 1024 * 1024
PREVIEW_CHARS = 60
#: Any token count in a record (the store keeps them as 32-bit integers).
MAX_TOKEN_COUNT = MAX_REPORTED_TOKENS
#: Integers an import may hold at all (64-bit); larger ones are refused before validation.
MAX_IMPORT_INT = 2**63 - 1


class MessageState(StrEnum):
    """Where a message stands; `label` says it to the user (chat badges, the Markdown export)."""

    label: str

    def __new__(cls, value: str, label: str) -> MessageState:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        return member

    #: Sent with the next call.
    CONTEXT = "context", "in context"
    #: Dropped to fit the budget; never sent again.
    TRIMMED = "trimmed", "trimmed · no longer in the model's context"
    #: A user message whose call failed and that the user moved on from.
    UNANSWERED = "unanswered", "not answered · not in context"
    #: An answer the user regenerated.
    REPLACED = "replaced", "regenerated · not in context"
    #: Folded into the running summary (policy "summarize"); never sent again, the summary is.
    SUMMARIZED = "summarized", "summarized · folded into the summary"


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """One line of at most `limit` characters."""
    return one_line(text, limit)


def new_message_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_message_id, min_length=1, max_length=64)
    created_at: datetime = Field(default_factory=utc_now)
    role: Role
    content: str
    state: MessageState = MessageState.CONTEXT
    #: Prompt tokens this message adds when sent (content plus per-message framing).
    tokens: int = Field(0, ge=0, le=MAX_TOKEN_COUNT)
    #: Kept in context by every policy.
    pinned: bool = False
    #: An assistant reply whose stream broke off or was stopped; the partial text is kept.
    interrupted: bool = False
    #: An assistant reply that ended at the reply cap (finish_reason "length"); it can be continued.
    cut_off: bool = False
    #: A user message the dashboard wrote, not the user (the request to continue a cut reply).
    automatic: bool = False

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        """Kept in UTC (a time without a zone is taken as UTC); refused when UTC cannot hold it."""
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"the time {value.isoformat()} is out of range in UTC") from None

    def as_api_message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    def preview(self, limit: int = PREVIEW_CHARS) -> str:
        return preview(self.content, limit)


class Turn(BaseModel):
    """One completed model call."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1, le=MAX_TOKEN_COUNT)
    model: str = Field(min_length=1, max_length=200)
    context_budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)
    messages_sent: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    counted_prompt_tokens: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    #: False when the model is unknown to tiktoken and the count is an estimate.
    count_exact: bool = True
    #: How far (relative) the count may have been short of the server's: 0 when exact, the
    #: estimate's safety margin otherwise (0.1 before any calibration).
    count_margin: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    reported_prompt_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    reported_completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    #: Of the reported prompt tokens, those the server read from its prompt cache, and those it
    #: wrote to it (Anthropic bills cache writes apart); None: the server did not say.
    reported_cached_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    reported_cache_write_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    counted_completion_tokens: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    #: "server": usage as the API reported it; "local": computed by the offline model; None: no usage.
    usage_source: Literal["server", "local"] | None = None
    latency_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    interrupted: bool = False
    #: Why the reply ended, as the server said ("stop", "length", ...); None when it never said.
    finish_reason: str | None = Field(None, max_length=64)
    #: The assistant message this turn added.
    reply_id: str | None = Field(None, max_length=64)
    #: Prompt tokens of the running summary this call sent (policy "summarize"); 0 when none.
    summary_tokens: int = Field(0, ge=0, le=MAX_TOKEN_COUNT)

    @property
    def cut_by_reply_cap(self) -> bool:
        return self.finish_reason == "length"

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens as billed: the server's report, or the local count when it sent none."""
        return (
            self.counted_prompt_tokens if self.reported_prompt_tokens is None else self.reported_prompt_tokens
        )

    @property
    def server_cut(self) -> SilentTruncation | None:
        """Set when the server reported far fewer prompt tokens than were sent: it cut the prompt
        to its context window without saying so."""
        if self.usage_source != "server":
            return None
        return silent_truncation(
            self.counted_prompt_tokens,
            self.reported_prompt_tokens,
            margin=self.count_margin,
            cached=self.cached_tokens,
        )

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the server's cache (0 when it reported none)."""
        return self.reported_cached_tokens or 0

    @property
    def cache_write_tokens(self) -> int:
        """Prompt tokens written to the server's cache and billed as such (0 when none reported)."""
        return self.reported_cache_write_tokens or 0

    @property
    def uncached_tokens(self) -> int:
        """Prompt tokens billed at the full input price: neither read from nor written to a cache."""
        return max(self.prompt_tokens - self.cached_tokens - self.cache_write_tokens, 0)

    @property
    def reply_tokens(self) -> int:
        """Reply tokens as billed: the server's report, or the local count when it sent none."""
        if self.reported_completion_tokens is None:
            return self.counted_completion_tokens
        return self.reported_completion_tokens


class TrimEvent(BaseModel):
    """Messages dropped before one call so its prompt fit the budget."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1, le=MAX_TOKEN_COUNT)
    dropped: list[str] = Field(description="Ids of the dropped messages, oldest first.")
    tokens_before: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    tokens_after: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)

    @property
    def tokens_freed(self) -> int:
        return self.tokens_before - self.tokens_after


# --- the running summary (policy "summarize") --------------------------------------------------


class SummaryVersion(BaseModel):
    """One version of the running summary: written by the summarizer model, or edited by the user."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    source: Literal["model", "user"]
    at: datetime = Field(default_factory=utc_now)
    #: The newest message folded into the summary by then (where the chat shows it).
    through_id: str | None = Field(None, max_length=64)

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        """Kept in UTC (a time without a zone is taken as UTC); refused when UTC cannot hold it."""
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"the time {value.isoformat()} is out of range in UTC") from None


class SummaryEvent(BaseModel):
    """One summarization before a call: the exchanges folded into the summary, what it cost, or
    (`fallback`) why the policy dropped them instead."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1, le=MAX_TOKEN_COUNT)
    folded: list[str] = Field(default=[], description="Ids of the messages folded in, oldest first.")
    #: Ids of the messages dropped instead (a fallback; the trim event of the same turn has them too).
    dropped: list[str] = []
    #: Prompt tokens before and after (summary included).
    tokens_before: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    tokens_after: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    #: Prompt tokens of the summary message sent from now on (0 when there is none).
    summary_tokens: int = Field(0, ge=0, le=MAX_TOKEN_COUNT)
    budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)
    #: The model asked to summarize (None when no call was made).
    summarizer_model: str | None = Field(None, max_length=200)
    #: Summarizer calls made (1, or 2 when the summary was condensed).
    calls: int = Field(0, ge=0, le=16)
    #: The summarizer's own usage, summed over its calls (None when it reported none).
    summarizer_prompt_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    summarizer_completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKEN_COUNT)
    #: "server": as the API reported it; "local": counted by the offline model.
    usage_source: Literal["server", "local"] | None = None
    #: The summary grew past its share of the budget and was summarized again.
    resummarized: bool = False
    #: Still too long after that, it was cut to its share.
    truncated: bool = False
    #: The summarizer failed (or could not be asked) and the exchanges were dropped instead.
    fallback: bool = False
    fallback_reason: str | None = Field(None, max_length=2_000)

    @property
    def tokens_freed(self) -> int:
        return self.tokens_before - self.tokens_after


@dataclass(frozen=True)
class RunningSummary:
    """The summary as it stands: sent after the system prompt instead of the folded messages."""

    text: str
    #: Prompt tokens of the summary's messages (framing and acknowledgement included).
    tokens: int
    #: Every version, oldest first; the last is `text`.
    versions: tuple[SummaryVersion, ...]
    #: The newest message folded into it: the chat shows the summary after this message.
    through_id: str | None


class ConversationRecord(BaseModel):
    """The export format: everything a conversation holds (never an API key)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["persona-dashboard/conversation"] = EXPORT_FORMAT
    version: Literal[2] = EXPORT_VERSION
    persona_id: str | None = Field(None, max_length=200)
    settings: ChatSettings
    messages: list[Message] = Field(min_length=1)
    turns: list[Turn] = []
    trim_events: list[TrimEvent] = []
    #: Left out of exports while there is none (`core.counting.calibration`).
    calibration: CalibrationRecord | None = None
    #: The running summary's versions, oldest first (policy "summarize"); absent in older files.
    summary_versions: list[SummaryVersion] = []
    summary_events: list[SummaryEvent] = []


class _MessageV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str
    state: MessageState = MessageState.CONTEXT
    tokens: int = Field(0, ge=0, le=MAX_TOKEN_COUNT)
    interrupted: bool = False


class _TrimEventV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1, le=MAX_TOKEN_COUNT)
    dropped: list[int]
    tokens_before: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    tokens_after: int = Field(ge=0, le=MAX_TOKEN_COUNT)
    budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)


class _ConversationRecordV1(BaseModel):
    """Format version 1: settings were two top-level fields, and trims named messages by index."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["persona-dashboard/conversation"] = EXPORT_FORMAT
    version: Literal[1] = 1
    persona_id: str | None = Field(None, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    context_budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)
    messages: list[_MessageV1] = Field(min_length=1)
    turns: list[Turn] = []
    trim_events: list[_TrimEventV1] = []

    def upgraded(self) -> dict[str, Any]:
        """This record as format version 2 (plain data, validated again by the caller)."""
        messages = [Message(**message.model_dump()) for message in self.messages]
        for event in self.trim_events:
            if any(not 0 < index < len(messages) for index in event.dropped):
                raise not_imported(Notice(code="conversation_trim_unknown", fields={"turn": event.turn}))
        trims = [
            {**event.model_dump(), "dropped": [messages[i].id for i in event.dropped]}
            for event in self.trim_events
        ]
        return {
            "persona_id": self.persona_id,
            "settings": {
                "model": self.model,
                "context_budget": self.context_budget,
                "max_reply_tokens": DEFAULT_REPLY_CAP,
            },
            "messages": [message.model_dump() for message in messages],
            "turns": [turn.model_dump() for turn in self.turns],
            "trim_events": trims,
        }


class Conversation:
    def __init__(self, system_prompt: str, settings: ChatSettings, *, persona_id: str | None = None) -> None:
        self.persona_id = persona_id
        self._settings = settings
        self._tokenizer = tokenizer_for(settings.model)
        #: Fitted to the servers' reported usage, per model (`core.counting.calibration`); in the export.
        self.calibration = Calibration()
        self.messages: list[Message] = []
        self.turns: list[Turn] = []
        self.trim_events: list[TrimEvent] = []
        self._positions: dict[str, int] = {}  # message id -> index into .messages
        # The in-context messages, kept incrementally so a turn never walks the history:
        # their indexes into .messages (ascending), their API form, and their token sum.
        self._context_indexes: list[int] = []
        self._context_api: list[dict[str, str]] = []
        self._context_tokens = 0  # without reply priming
        self._pinned_tokens = 0  # of pinned in-context messages
        # Ids of messages changed in place (state, pin, tokens) since the store last asked, so a
        # save writes only what changed.
        self._changed_ids: set[str] = set()
        # The running summary (policy "summarize"): its versions, events, and the tokens of the
        # summary message, which is sent after the system prompt and counted in the prompt.
        self.summary_versions: list[SummaryVersion] = []
        self.summary_events: list[SummaryEvent] = []
        self._summary_tokens = 0
        self._append(Message(role="system", content=system_prompt))

    # --- reading -----------------------------------------------------------------------------

    @property
    def settings(self) -> ChatSettings:
        return self._settings

    @property
    def model(self) -> str:
        return self._settings.model

    @property
    def context_budget(self) -> int:
        """The prompt budget calls are fitted to: the setting, less where the tokenizer asks (a
        server's context window, an estimate's safety margin; see `core.counting.methods`)."""
        return self._tokenizer.prompt_budget(self._settings.context_budget, self._settings.max_reply_tokens)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def system_prompt(self) -> str:
        return self.messages[0].content

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the in-context messages as they stand (the running summary's message
        included), reply priming included."""
        return self._context_tokens + self._summary_tokens + self._tokenizer.reply_priming

    @property
    def pending_user_message(self) -> Message | None:
        """The newest user message when it still awaits an answer."""
        last = self._last_in_context()
        return last if last.role == "user" else None

    @property
    def last_reply(self) -> Message | None:
        """The newest in-context message when it is an answer."""
        last = self._last_in_context()
        return last if last.role == "assistant" else None

    def message(self, message_id: str) -> Message:
        try:
            return self.messages[self._positions[message_id]]
        except KeyError:
            raise ConversationStateError(
                f"There is no message {message_id!r} in this conversation."
            ) from None

    @property
    def pinned_tokens(self) -> int:
        """Prompt tokens of the pinned messages in context (which no policy takes out)."""
        return self._pinned_tokens

    def iter_context(self) -> Iterator[Message]:
        """The in-context messages, oldest first, one at a time (a policy stops when it has enough)."""
        return (self.messages[i] for i in self._context_indexes)

    def context_messages(self) -> list[Message]:
        """The messages the next call would send before any policy acts, oldest first."""
        return [self.messages[i] for i in self._context_indexes]

    def api_messages(self) -> list[dict[str, str]]:
        """The in-context messages in the API's form, with the running summary (if any) right
        after the system prompt. Read them; do not change them."""
        if not self.summary_versions:
            return list(self._context_api)
        summary = summary_messages(self.summary_versions[-1].text)
        return [self._context_api[0], *summary, *self._context_api[1:]]

    # --- changing ----------------------------------------------------------------------------

    def update_settings(self, **changes: Any) -> ChatSettings:
        """Change settings (validated: InvalidSettings, saying which and why, leaves them as they
        were); messages are re-counted only when the tokenizer changes."""
        try:
            settings = ChatSettings.model_validate({**self._settings.model_dump(), **changes})
        except ValidationError as error:
            problems = problem_notices(error, model=ChatSettings)
            raise InvalidSettings("; ".join(map(english, problems))).coded(
                "invalid_settings", problems=problems
            ) from None
        # A tokenizer installed for this model (calibrated, the server's) stays until the model changes.
        tokenizer = self._tokenizer if settings.model == self.model else tokenizer_for(settings.model)
        self._settings = settings
        if tokenizer != self._tokenizer:
            self._tokenizer = tokenizer
            for message in self.messages:
                message.tokens = tokenizer.count_message(message.as_api_message())
            self._changed_ids.update(self._positions)
            self._context_tokens = sum(self.messages[i].tokens for i in self._context_indexes)
            self._pinned_tokens = sum(m.tokens for m in self.iter_context() if m.pinned)
            self._recount_summary()
        return settings

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Count with `tokenizer` from now on (`core.counting.methods` installs calibrated and server-backed
        ones); every message is recounted in one pass, and the sums follow."""
        if tokenizer is self._tokenizer:
            return
        self._tokenizer = tokenizer
        self.recount()

    def recount(self, message_ids: Iterable[str] | None = None) -> None:
        """Count these messages (None: all) again with the current tokenizer, e.g. once the
        server counted them; only messages whose count changed are marked changed."""
        indexes = (
            range(len(self.messages))
            if message_ids is None
            else sorted({self._positions[i] for i in message_ids if i in self._positions})
        )
        for index in indexes:
            message = self.messages[index]
            tokens = self._tokenizer.count_message(message.as_api_message())
            if tokens == message.tokens:
                continue
            if message.state is MessageState.CONTEXT:
                self._context_tokens += tokens - message.tokens
                if message.pinned:
                    self._pinned_tokens += tokens - message.tokens
            message.tokens = tokens
            self._changed_ids.add(message.id)
        if message_ids is None:
            self._recount_summary()

    def add_user(self, text: str, *, automatic: bool = False) -> Message:
        """Add the user's message. A previous message still awaiting an answer becomes unanswered."""
        if not text.strip():
            raise ConversationStateError("An empty message cannot be sent.").coded("empty_message")
        pending = self.pending_user_message
        if pending is not None:
            self.leave_context([pending.id], MessageState.UNANSWERED)
        return self._append(Message(role="user", content=text, automatic=automatic))

    def add_assistant(
        self,
        text: str,
        usage: Usage | None = None,
        *,
        usage_source: Literal["server", "local"] = "server",
        latency_s: float | None = None,
        interrupted: bool = False,
        finish_reason: str | None = None,
    ) -> Turn:
        """Record the reply to the pending user message, and the turn it completes."""
        if self.pending_user_message is None:
            raise ConversationStateError("There is no user message for this reply to answer.")
        if not text:
            raise ConversationStateError("An empty reply is not recorded; the user message stays pending.")
        messages_sent = len(self._context_indexes) + (SUMMARY_MESSAGE_COUNT if self.summary_versions else 0)
        counted_prompt = self.prompt_tokens
        reply = self._append(
            Message(
                role="assistant",
                content=text,
                interrupted=interrupted,
                cut_off=finish_reason == "length" and not interrupted,
            )
        )
        turn = Turn(
            number=len(self.turns) + 1,
            model=self.model,
            context_budget=self.context_budget,
            messages_sent=messages_sent,
            counted_prompt_tokens=counted_prompt,
            count_exact=self._tokenizer.exact,
            count_margin=self._tokenizer.margin,
            reported_prompt_tokens=usage.prompt_tokens if usage else None,
            reported_completion_tokens=usage.completion_tokens if usage else None,
            reported_cached_tokens=usage.cached_prompt_tokens if usage else None,
            reported_cache_write_tokens=usage.cache_write_tokens if usage else None,
            counted_completion_tokens=self._tokenizer.count_text(text),
            usage_source=usage_source if usage else None,
            latency_s=latency_s,
            interrupted=interrupted,
            finish_reason=finish_reason,
            reply_id=reply.id,
            summary_tokens=self._summary_tokens,
        )
        self.turns.append(turn)
        return turn

    def regenerate(self) -> None:
        """Set the last answer aside so the question it answered is pending again."""
        reply = self.last_reply
        if reply is None:
            raise ConversationStateError("There is no answer to regenerate.").coded("nothing_to_regenerate")
        self.leave_context([reply.id], MessageState.REPLACED)

    def pin(self, message_id: str, pinned: bool = True) -> Message:
        """Pin (or unpin) a message: no context policy takes a pinned message out of the context."""
        message = self.message(message_id)
        if message.role == "system":
            raise ConversationStateError("The system prompt is always sent; it needs no pin.")
        if message.pinned != pinned and message.state is MessageState.CONTEXT:
            self._pinned_tokens += message.tokens if pinned else -message.tokens
        message.pinned = pinned
        self._changed_ids.add(message_id)
        return message

    def leave_context(self, message_ids: list[str], state: MessageState) -> None:
        """Take these in-context messages out of the context, into `state`.

        Policies take out whole user/assistant pairs, so what stays still alternates.
        """
        if state is MessageState.CONTEXT:
            raise ConversationStateError("Messages leave the context into another state.")
        leaving = {self._positions[i] for i in message_ids if i in self._positions}
        if not leaving <= set(self._context_indexes) or 0 in leaving:
            raise ConversationStateError("Only in-context messages after the system prompt can leave it.")
        for index in leaving:
            self._changed_ids.add(self.messages[index].id)
            self.messages[index].state = state
            self._context_tokens -= self.messages[index].tokens
            if self.messages[index].pinned:
                self._pinned_tokens -= self.messages[index].tokens
        kept = [p for p, index in enumerate(self._context_indexes) if index not in leaving]
        self._context_indexes = [self._context_indexes[p] for p in kept]
        self._context_api = [self._context_api[p] for p in kept]

    def record_trim(self, dropped: list[str], tokens_before: int) -> TrimEvent:
        """Take `dropped` out of the context as trimmed, and log it against the coming turn."""
        self.leave_context(dropped, MessageState.TRIMMED)
        event = TrimEvent(
            turn=len(self.turns) + 1,
            dropped=dropped,
            tokens_before=tokens_before,
            tokens_after=self.prompt_tokens,
            budget=self.context_budget,
        )
        self.trim_events.append(event)
        return event

    def pop_changed_message_ids(self) -> set[str]:
        """Ids of messages changed in place since the last call (for the store: what to rewrite)."""
        changed, self._changed_ids = self._changed_ids, set()
        return changed

    # --- the running summary (policy "summarize") ---------------------------------------------

    @property
    def summary(self) -> RunningSummary | None:
        """The running summary as it stands (sent after the system prompt), or None."""
        if not self.summary_versions:
            return None
        last = self.summary_versions[-1]
        return RunningSummary(last.text, self._summary_tokens, tuple(self.summary_versions), last.through_id)

    @property
    def summary_tokens(self) -> int:
        """Prompt tokens of the summary message (0 when there is no summary)."""
        return self._summary_tokens

    def count_summary(self, text: str) -> int:
        """Prompt tokens `text` would take as the summary message, with this model's tokenizer."""
        return summary_tokens(text, self._tokenizer)

    def record_summary(
        self,
        folded: list[str],
        text: str,
        *,
        tokens_before: int,
        summarizer_model: str,
        calls: int = 1,
        usage: Usage | None = None,
        usage_source: Literal["server", "local"] | None = None,
        resummarized: bool = False,
        truncated: bool = False,
    ) -> SummaryEvent:
        """Fold `folded` (whole in-context exchanges) into the summary, now `text` (the model's),
        and log it against the coming turn."""
        if not text.strip():
            raise ConversationStateError("An empty summary is not recorded.")
        if folded:
            self.leave_context(folded, MessageState.SUMMARIZED)
        previous = self.summary_versions[-1].through_id if self.summary_versions else None
        self._set_summary(
            SummaryVersion(text=text, source="model", through_id=folded[-1] if folded else previous)
        )
        return self._log_summary_event(
            tokens_before,
            summarizer_model,
            calls,
            folded=folded,
            summarizer_prompt_tokens=usage.prompt_tokens if usage else None,
            summarizer_completion_tokens=usage.completion_tokens if usage else None,
            usage_source=usage_source if usage else None,
            resummarized=resummarized,
            truncated=truncated,
        )

    def record_summary_fallback(
        self,
        reason: str,
        *,
        dropped: list[str],
        tokens_before: int,
        summarizer_model: str | None = None,
        calls: int = 0,
    ) -> SummaryEvent:
        """The summary could not be written: drop `dropped` instead (a trim event as any drop),
        and log why against the coming turn."""
        if dropped:
            self.record_trim(dropped, tokens_before=tokens_before)
        return self._log_summary_event(
            tokens_before,
            summarizer_model,
            calls,
            dropped=dropped,
            fallback=True,
            fallback_reason=reason[:2_000],
        )

    def _log_summary_event(
        self, tokens_before: int, summarizer_model: str | None, calls: int, **outcome: Any
    ) -> SummaryEvent:
        """Log what happened to the context before the coming turn, as it stands now."""
        event = SummaryEvent(
            turn=len(self.turns) + 1,
            tokens_before=tokens_before,
            tokens_after=self.prompt_tokens,
            summary_tokens=self._summary_tokens,
            budget=self.context_budget,
            summarizer_model=summarizer_model,
            calls=calls,
            **outcome,
        )
        self.summary_events.append(event)
        return event

    def edit_summary(self, text: str) -> RunningSummary:
        """The user's own version of the summary, sent from the next call on (recounted; kept
        with the others in `summary_versions`)."""
        current = self.summary
        if current is None:
            raise ConversationStateError("There is no summary to edit yet.").coded("no_summary_yet")
        if not text.strip():
            raise ConversationStateError("A summary cannot be empty.").coded("summary_empty_edit")
        if text != current.text:
            self._set_summary(SummaryVersion(text=text, source="user", through_id=current.through_id))
        summary = self.summary
        assert summary is not None
        return summary

    def _set_summary(self, version: SummaryVersion) -> None:
        self.summary_versions.append(version)
        self._summary_tokens = summary_tokens(version.text, self._tokenizer)

    def _recount_summary(self) -> None:
        last = self.summary_versions[-1] if self.summary_versions else None
        self._summary_tokens = summary_tokens(last.text, self._tokenizer) if last else 0

    # --- export and import -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = self._record_dict()
        data.pop("calibration", None)
        if self.calibration:
            data["calibration"] = self.calibration.to_dict()
        return data

    def _record_dict(self) -> dict[str, Any]:
        return ConversationRecord(
            persona_id=self.persona_id,
            settings=self._settings,
            messages=self.messages,
            turns=self.turns,
            trim_events=self.trim_events,
            summary_versions=self.summary_versions,
            summary_events=self.summary_events,
        ).model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_markdown(self, title: str = "Conversation") -> str:
        """A readable transcript; messages out of context are labelled as such."""
        lines = [
            f"# {title}",
            "",
            f"Model `{self.model}`, context budget {self.context_budget:,} tokens.",
            "",
        ]
        summary = self.summary
        for message in self.messages:
            notes = [] if message.state is MessageState.CONTEXT else [message.state.label]
            notes += [
                note
                for flag, note in (
                    (message.pinned, "pinned"),
                    (message.interrupted, "interrupted"),
                    (message.cut_off, "cut by the reply cap"),
                    (message.automatic, "sent by the dashboard"),
                )
                if flag
            ]
            suffix = f" _({', '.join(notes)})_" if notes else ""
            # Raw HTML escaped (and images made links, below): the transcript is read in other
            # viewers.
            text = html.escape(message.content, quote=False)
            lines += [f"## {message.role}{suffix}", "", text, ""]
            if summary is not None and message.id == summary.through_id:
                note = "sent in place of the summarized messages above"
                lines += [f"## summary _({note})_", "", summary.text, ""]
        return safe_markdown("\n".join(lines))

    @classmethod
    def from_dict(cls, data: Any) -> Conversation:
        """Rebuild a conversation from `to_dict()` output (format 2, or 1 upgraded); token counts
        are recomputed, not trusted."""
        _check_plain_values(data)
        try:
            if isinstance(data, dict) and data.get("version", 1) == 1:
                data = _ConversationRecordV1.model_validate(data).upgraded()
            record = ConversationRecord.model_validate(data)
        except ValidationError as exc:
            raise not_imported(
                Notice(code="conversation_not_export", fields={"problems": problem_notices(exc)})
            ) from None
        _check_well_formed(record)
        _check_summary(record)
        conversation = cls(record.messages[0].content, record.settings, persona_id=record.persona_id)
        conversation.messages, conversation._positions = [], {}
        conversation._context_indexes, conversation._context_api = [], []
        conversation._context_tokens = conversation._pinned_tokens = 0
        for message in record.messages:
            conversation._append(message)
        conversation.turns = list(record.turns)
        conversation.trim_events = list(record.trim_events)
        conversation.calibration = Calibration(record.calibration)
        conversation.summary_versions = list(record.summary_versions)
        conversation.summary_events = list(record.summary_events)
        conversation._recount_summary()
        conversation._changed_ids = set()
        return conversation

    @classmethod
    def from_json(cls, data: str | bytes, *, max_bytes: int = MAX_IMPORT_BYTES) -> Conversation:
        """Parse an exported JSON file, rejecting oversized or malformed input with a clear error."""
        size = len(data.encode() if isinstance(data, str) else data)
        if size > max_bytes:
            raise not_imported(
                Notice(code="conversation_too_large", fields={"size": size, "limit": max_bytes})
            )
        try:
            parsed = json.loads(data)
        except UnicodeDecodeError:
            raise not_imported(Notice(code="conversation_not_utf8")) from None
        except json.JSONDecodeError as exc:
            raise not_imported(
                Notice(
                    code="conversation_json_at",
                    fields={"line": exc.lineno, "column": exc.colno, "problem": json_problem(exc)},
                )
            ) from None
        except RecursionError:
            raise not_imported(Notice(code="conversation_too_deep")) from None
        except ValueError as exc:
            # Python refuses to read an integer of more than 4,300 digits (int_max_str_digits).
            if "digits" in str(exc):
                raise not_imported(Notice(code="conversation_huge_number")) from None
            raise not_imported(Notice(code="conversation_not_json")) from None
        return cls.from_dict(parsed)

    # --- internals ---------------------------------------------------------------------------

    def _append(self, message: Message) -> Message:
        message.tokens = self._tokenizer.count_message(message.as_api_message())
        index = len(self.messages)
        if message.state is MessageState.CONTEXT:
            self._context_indexes.append(index)
            self._context_api.append(message.as_api_message())
            self._context_tokens += message.tokens
            if message.pinned:
                self._pinned_tokens += message.tokens
        self._positions[message.id] = index
        self.messages.append(message)
        return message

    def _last_in_context(self) -> Message:
        return self.messages[self._context_indexes[-1]]


def not_imported(problem: Notice) -> ConversationImportError:
    """The error for a file that is not imported: its English, and `problem` for the page."""
    return ConversationImportError(english(problem)).coded("conversation_import", problem=problem)


def _check_plain_values(data: Any) -> None:
    """Refuse what validation would choke on or let through to crash later: text with lone
    surrogates (not encodable), integers beyond 64 bits (or beyond what Python will print), and
    numbers that are not finite. Walks without recursion, so any nesting depth is fine."""
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while pending:
        path, value = pending.pop()
        where = field_path(path) or english(Notice(code="validation_top_level"))
        if isinstance(value, str):
            if not _encodable(value):
                raise not_imported(Notice(code="conversation_surrogate", fields={"where": where}))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not -MAX_IMPORT_INT - 1 <= value <= MAX_IMPORT_INT:
                raise not_imported(Notice(code="conversation_big_integer", fields={"where": where}))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise not_imported(
                    Notice(code="conversation_not_finite", fields={"where": where, "value": str(value)})
                )
        elif isinstance(value, dict):
            for key, child in value.items():
                if isinstance(key, str) and not _encodable(key):
                    raise not_imported(Notice(code="conversation_surrogate_key", fields={"where": where}))
                pending.append(((*path, str(key)), child))
        elif isinstance(value, list | tuple):
            pending.extend(((*path, index), child) for index, child in enumerate(value))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_well_formed(record: ConversationRecord) -> None:
    """The invariants the policies rely on: one system prompt first, then alternating pairs in context."""
    first, rest = record.messages[0], record.messages[1:]
    if first.role != "system" or first.state is not MessageState.CONTEXT:
        raise not_imported(Notice(code="conversation_first_not_system"))
    if any(m.role == "system" for m in rest):
        raise not_imported(Notice(code="conversation_second_system"))
    ids = {message.id for message in record.messages}
    if len(ids) != len(record.messages):
        raise not_imported(Notice(code="conversation_duplicate_id"))
    expected: Role = "user"
    for position, message in enumerate(rest, start=1):
        if message.state is not MessageState.CONTEXT:
            continue
        if message.role != expected:
            raise not_imported(
                Notice(
                    code="conversation_not_alternating",
                    fields={"position": position, "role": message.role, "expected": expected},
                )
            )
        expected = "assistant" if expected == "user" else "user"
    for event in record.trim_events:
        if any(message_id not in ids for message_id in event.dropped):
            raise not_imported(Notice(code="conversation_trim_unknown", fields={"turn": event.turn}))
        if record.turns and event.turn > len(record.turns) + 1:
            raise not_imported(
                Notice(code="conversation_trim_turn", fields={"turn": event.turn, "turns": len(record.turns)})
            )
    roles = {message.id: message.role for message in record.messages}
    replies: set[str] = set()
    for position, turn in enumerate(record.turns, start=1):
        if turn.number != position:
            raise not_imported(
                Notice(code="conversation_turn_number", fields={"position": position, "number": turn.number})
            )
        if turn.messages_sent > len(record.messages):
            raise not_imported(
                Notice(
                    code="conversation_turn_sent", fields={"position": position, "count": turn.messages_sent}
                )
            )
        if turn.reply_id is not None:
            if roles.get(turn.reply_id) != "assistant":
                raise not_imported(
                    Notice(
                        code="conversation_turn_reply",
                        fields={"position": position, "id": repr(turn.reply_id)},
                    )
                )
            if turn.reply_id in replies:
                raise not_imported(Notice(code="conversation_turn_same_reply", fields={"position": position}))
            replies.add(turn.reply_id)


def _check_summary(record: ConversationRecord) -> None:
    """The running summary's records name messages of this conversation."""
    ids = {message.id for message in record.messages}
    for version in record.summary_versions:
        if version.through_id is not None and version.through_id not in ids:
            raise not_imported(Notice(code="conversation_summary_unknown"))
    for event in record.summary_events:
        if any(message_id not in ids for message_id in (*event.folded, *event.dropped)):
            raise not_imported(Notice(code="conversation_summary_event_unknown", fields={"turn": event.turn}))
