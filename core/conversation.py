"""One chat's history, fitted to a context budget, with a record of every turn and every trim.

The in-context messages always read: system, then user/assistant pairs, then at most one
pending user message. `prepare()` drops the oldest whole pairs until the prompt fits the budget;
dropped messages stay in `.messages` (state "trimmed") but are never sent again.

Each message is tokenized once, when it is added; the prompt total is kept as a running sum,
so a turn costs the new messages, not the history.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.backends import Usage
from core.errors import ConversationImportError, ConversationStateError, PromptTooLong
from core.tokens import REPLY_PRIMING, Tokenizer, tokenizer_for

Role = Literal["system", "user", "assistant"]
# context:    sent with the next call
# trimmed:    dropped to fit the budget; never sent again
# unanswered: a user message whose call failed and that the user moved on from
# replaced:   an answer the user regenerated
MessageState = Literal["context", "trimmed", "unanswered", "replaced"]

EXPORT_FORMAT = "persona-dashboard/conversation"
EXPORT_VERSION = 1
MAX_IMPORT_BYTES = 5 * 1024 * 1024


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str
    state: MessageState = "context"
    #: Prompt tokens this message adds when sent (content plus per-message framing).
    tokens: int = Field(0, ge=0)
    #: An assistant reply whose stream broke off; the partial text is kept.
    interrupted: bool = False

    def as_api_message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Turn(BaseModel):
    """One completed model call."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1)
    model: str
    context_budget: int
    messages_sent: int
    counted_prompt_tokens: int
    #: False when the model is unknown to tiktoken and the count is an estimate.
    count_exact: bool = True
    reported_prompt_tokens: int | None = None
    reported_completion_tokens: int | None = None
    counted_completion_tokens: int
    #: "server": usage as the API reported it; "local": computed by the offline model; None: no usage.
    usage_source: Literal["server", "local"] | None = None
    latency_s: float | None = None
    interrupted: bool = False

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens as billed: the server's report, or the local count when it sent none."""
        return (
            self.counted_prompt_tokens if self.reported_prompt_tokens is None else self.reported_prompt_tokens
        )

    @property
    def reply_tokens(self) -> int:
        """Reply tokens as billed: the server's report, or the local count when it sent none."""
        if self.reported_completion_tokens is None:
            return self.counted_completion_tokens
        return self.reported_completion_tokens


class TrimEvent(BaseModel):
    """Messages dropped before one call so its prompt fit the budget."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1)
    dropped: list[int] = Field(description="Indexes into Conversation.messages.")
    tokens_before: int
    tokens_after: int
    budget: int

    @property
    def tokens_freed(self) -> int:
        return self.tokens_before - self.tokens_after


class ConversationRecord(BaseModel):
    """The export format: everything a conversation holds (never an API key)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["persona-dashboard/conversation"] = EXPORT_FORMAT
    version: Literal[1] = EXPORT_VERSION
    persona_id: str | None = None
    model: str = Field(min_length=1)
    context_budget: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    turns: list[Turn] = []
    trim_events: list[TrimEvent] = []


class Conversation:
    def __init__(
        self,
        system_prompt: str,
        model: str,
        context_budget: int,
        *,
        persona_id: str | None = None,
    ) -> None:
        self.persona_id = persona_id
        self.context_budget = context_budget
        self._model = model
        self._tokenizer = tokenizer_for(model)
        self.messages: list[Message] = []
        self.turns: list[Turn] = []
        self.trim_events: list[TrimEvent] = []
        # The in-context messages, kept incrementally so a turn never walks the history:
        # their indexes into .messages (ascending), their API form, and their token sum.
        self._context_indexes: list[int] = []
        self._context_api: list[dict[str, str]] = []
        self._context_tokens = 0  # without reply priming
        self._append("system", system_prompt)

    # --- reading -----------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self._model

    @model.setter
    def model(self, model: str) -> None:
        """Switch models; messages are re-counted only when the tokenizer changes."""
        tokenizer = tokenizer_for(model)
        self._model = model
        if tokenizer == self._tokenizer:
            return
        self._tokenizer = tokenizer
        for message in self.messages:
            message.tokens = self._tokenizer.count_message(message.as_api_message())
        self._context_tokens = sum(self.messages[i].tokens for i in self._context_indexes)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def system_prompt(self) -> str:
        return self.messages[0].content

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of the in-context messages as they stand, reply priming included."""
        return self._context_tokens + REPLY_PRIMING

    @property
    def pending_user_message(self) -> Message | None:
        """The newest user message when it still awaits an answer."""
        last = self._last_in_context()
        return last if last.role == "user" else None

    def context_messages(self) -> list[Message]:
        return [self.messages[i] for i in self._context_indexes]

    def context_indexes(self) -> list[int]:
        """Indexes into .messages of the in-context messages, oldest first."""
        return list(self._context_indexes)

    def trim_plan(self, extra_tokens: int = 0) -> tuple[list[int], int]:
        """Which messages (indexes) a call must drop to fit the budget, and the prompt tokens left.

        `extra_tokens` asks the question for a message not added yet. The plan may still be over
        budget when dropping every earlier exchange is not enough.
        """
        total = self.prompt_tokens + extra_tokens
        # In context: [system, user, assistant, ..., pending user?]; exchanges start at odd
        # positions and end before the pending user message, which is never dropped.
        exchanges_end = len(self._context_indexes) - (1 if self.pending_user_message else 0)
        position = 1
        while total > self.context_budget and position + 1 < exchanges_end:
            user, reply = (self.messages[i] for i in self._context_indexes[position : position + 2])
            total -= user.tokens + reply.tokens
            position += 2
        return self._context_indexes[1:position], total

    # --- changing ----------------------------------------------------------------------------

    def add_user(self, text: str) -> Message:
        """Add the user's message. A previous message still awaiting an answer becomes unanswered."""
        if not text.strip():
            raise ConversationStateError("An empty message cannot be sent.")
        pending = self.pending_user_message
        if pending is not None:
            self._leave_context(len(self._context_indexes) - 1, 1, "unanswered")
        return self._append("user", text)

    def prepare(self) -> list[dict[str, str]]:
        """The messages to send now, fitted to the budget by dropping the oldest whole exchanges.

        Raises PromptTooLong, changing nothing, when the system prompt and the newest user
        message alone exceed the budget.
        """
        newest = self.pending_user_message
        if newest is None:
            raise ConversationStateError("There is no user message awaiting an answer.")
        tokens_before = self.prompt_tokens
        dropped, total = self.trim_plan()
        if total > self.context_budget:
            raise PromptTooLong(text=newest.content, prompt_tokens=total, budget=self.context_budget)
        if dropped:
            self._leave_context(1, len(dropped), "trimmed")
            self.trim_events.append(
                TrimEvent(
                    turn=len(self.turns) + 1,
                    dropped=dropped,
                    tokens_before=tokens_before,
                    tokens_after=total,
                    budget=self.context_budget,
                )
            )
        # The caller may read but must not mutate these dicts: they are the conversation's own.
        return list(self._context_api)

    def add_assistant(
        self,
        text: str,
        usage: Usage | None = None,
        *,
        usage_source: Literal["server", "local"] = "server",
        latency_s: float | None = None,
        interrupted: bool = False,
    ) -> Turn:
        """Record the reply to the pending user message, and the turn it completes."""
        if self.pending_user_message is None:
            raise ConversationStateError("There is no user message for this reply to answer.")
        if not text:
            raise ConversationStateError("An empty reply is not recorded; the user message stays pending.")
        messages_sent = len(self._context_indexes)
        counted_prompt = self.prompt_tokens
        self._append("assistant", text, interrupted=interrupted)
        turn = Turn(
            number=len(self.turns) + 1,
            model=self.model,
            context_budget=self.context_budget,
            messages_sent=messages_sent,
            counted_prompt_tokens=counted_prompt,
            count_exact=self._tokenizer.exact,
            reported_prompt_tokens=usage.prompt_tokens if usage else None,
            reported_completion_tokens=usage.completion_tokens if usage else None,
            counted_completion_tokens=self._tokenizer.count_text(text),
            usage_source=usage_source if usage else None,
            latency_s=latency_s,
            interrupted=interrupted,
        )
        self.turns.append(turn)
        return turn

    def regenerate(self) -> None:
        """Set the last answer aside so the question it answered is pending again."""
        last = self._last_in_context()
        if last.role != "assistant":
            raise ConversationStateError("There is no answer to regenerate.")
        self._leave_context(len(self._context_indexes) - 1, 1, "replaced")

    # --- export and import -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return ConversationRecord(
            persona_id=self.persona_id,
            model=self.model,
            context_budget=self.context_budget,
            messages=self.messages,
            turns=self.turns,
            trim_events=self.trim_events,
        ).model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_markdown(self, title: str = "Conversation") -> str:
        """A readable transcript; messages out of context are labelled as such."""
        labels = {"trimmed": "trimmed from context", "unanswered": "not answered", "replaced": "regenerated"}
        lines = [
            f"# {title}",
            "",
            f"Model `{self.model}`, context budget {self.context_budget:,} tokens.",
            "",
        ]
        for message in self.messages:
            notes = [labels[message.state]] if message.state in labels else []
            if message.interrupted:
                notes.append("interrupted")
            suffix = f" _({', '.join(notes)})_" if notes else ""
            lines += [f"## {message.role}{suffix}", "", message.content, ""]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: Any) -> Conversation:
        """Rebuild a conversation from `to_dict()` output; token counts are recomputed, not trusted."""
        try:
            record = ConversationRecord.model_validate(data)
        except ValidationError as exc:
            raise ConversationImportError(_describe_validation_error(exc)) from None
        _check_well_formed(record)
        conversation = cls(
            record.messages[0].content, record.model, record.context_budget, persona_id=record.persona_id
        )
        conversation.messages = []
        conversation._context_indexes, conversation._context_api = [], []
        conversation._context_tokens = 0
        for message in record.messages:
            conversation._append(message.role, message.content, message.state, message.interrupted)
        conversation.turns = list(record.turns)
        conversation.trim_events = list(record.trim_events)
        return conversation

    @classmethod
    def from_json(cls, data: str | bytes, *, max_bytes: int = MAX_IMPORT_BYTES) -> Conversation:
        """Parse an exported JSON file, rejecting oversized or malformed input with a clear error."""
        size = len(data.encode() if isinstance(data, str) else data)
        if size > max_bytes:
            raise ConversationImportError(
                f"The file is {size:,} bytes; conversations over {max_bytes:,} bytes are not imported."
            )
        try:
            parsed = json.loads(data)
        except UnicodeDecodeError:
            raise ConversationImportError("The file is not UTF-8 text.") from None
        except json.JSONDecodeError as exc:
            raise ConversationImportError(
                f"The file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
            ) from None
        except RecursionError:
            raise ConversationImportError("The file's JSON is nested too deeply.") from None
        return cls.from_dict(parsed)

    # --- internals ---------------------------------------------------------------------------

    def _append(
        self, role: Role, content: str, state: MessageState = "context", interrupted: bool = False
    ) -> Message:
        message = Message(role=role, content=content, state=state, interrupted=interrupted)
        message.tokens = self._tokenizer.count_message(message.as_api_message())
        if state == "context":
            self._context_indexes.append(len(self.messages))
            self._context_api.append(message.as_api_message())
            self._context_tokens += message.tokens
        self.messages.append(message)
        return message

    def _leave_context(self, position: int, count: int, state: MessageState) -> None:
        """Take `count` in-context messages, from `position` in the context, out of it."""
        for index in self._context_indexes[position : position + count]:
            self.messages[index].state = state
            self._context_tokens -= self.messages[index].tokens
        del self._context_indexes[position : position + count]
        del self._context_api[position : position + count]

    def _last_in_context(self) -> Message:
        return self.messages[self._context_indexes[-1]]


def _describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "the top level"
        problems.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 5} more problems)" if exc.error_count() > 5 else ""
    return "This is not a conversation export: " + "; ".join(problems) + more + "."


def _check_well_formed(record: ConversationRecord) -> None:
    """The invariants prepare() relies on: one system prompt first, then alternating pairs in context."""
    first, rest = record.messages[0], record.messages[1:]
    if first.role != "system" or first.state != "context":
        raise ConversationImportError("The first message must be the system prompt, in context.")
    if any(m.role == "system" for m in rest):
        raise ConversationImportError("Only the first message may be a system prompt.")
    expected: Role = "user"
    for position, message in enumerate(rest, start=1):
        if message.state != "context":
            continue
        if message.role != expected:
            raise ConversationImportError(
                f"Message {position} is a {message.role} message in context where a {expected} "
                "message was expected; in-context messages must alternate user/assistant."
            )
        expected = "assistant" if expected == "user" else "user"
    for event in record.trim_events:
        if any(not 0 < index < len(record.messages) for index in event.dropped):
            raise ConversationImportError(
                f"Trim event of turn {event.turn} names a message that does not exist."
            )
