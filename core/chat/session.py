"""A chat session: one conversation with its settings, context policy and backend, and every rule
of a turn.

    session = ChatSession.start(persona, backend)
    for chunk in session.send("北京烤鸭怎么吃？"):
        print(chunk, end="")
    session.last_turn  # the record of the call: tokens counted and reported, latency, ...

`send()`, `retry()`, `regenerate()` and `continue_reply()` return an iterator of reply text
chunks. When it is exhausted the turn is recorded (`last_turn`). When the call fails, iterating
raises a typed `core.errors.DashboardError` (also kept in `.error`), the history is left
well-formed, any text that streamed is kept (marked interrupted) and the user's message stays
pending for `retry()`. `stop()` ends a reply in progress and keeps what arrived.

Nothing here knows about Streamlit: the page only lays out what a session holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from core.chat.context import Completion, ContextPolicy, policy_named, summary_cap
from core.chat.conversation import Conversation, Turn
from core.chat.settings import MAX_REPLY_CAP, ChatSettings, Sampling
from core.counting.methods import Counting, counting_for
from core.errors import BackendError, ConversationStateError, DashboardError, EmptyReply
from core.personas.persona import Persona, system_message
from core.providers.backends import ChatBackend, ChatRequest, ReplyStream

#: Called on the thread that runs a turn once its request is built and goes to the backend (after
#: the policy's fit): `core.service.StartedReply` holds the page's rerun until then, so the
#: request is not built while a rerun competes with it for the interpreter.
REQUEST_GOING_OUT: ContextVar[Callable[[], None] | None] = ContextVar("request_going_out", default=None)

#: Sent (as a user message the dashboard writes) to continue a reply cut off by the reply cap.
CONTINUE_PROMPT = (
    "Your previous reply was cut off by the length limit. Continue exactly where it stopped, "
    "without repeating anything."
)
#: The same, for a reply interrupted before it ended (stopped, broken off, a crash).
CONTINUE_INTERRUPTED_PROMPT = (
    "Your previous reply was interrupted before it ended. Continue exactly where it stopped, "
    "without repeating anything."
)


@dataclass(frozen=True)
class _ReplyInProgress:
    stream: ReplyStream
    started: float


class ChatSession:
    def __init__(
        self,
        conversation: Conversation,
        backend: ChatBackend,
        *,
        clock: Callable[[], float] = time.perf_counter,
        summarizer_backend: ChatBackend | None = None,
    ) -> None:
        self.conversation = conversation
        #: Replaceable between turns (the user changed the connection); one per connection.
        self.backend = backend
        #: Where summaries are asked for (policy "summarize"); None: the chat's own backend.
        self.summarizer_backend = summarizer_backend
        #: The last call's failure, until the next call starts.
        self.error: DashboardError | None = None
        self.last_turn: Turn | None = conversation.turns[-1] if conversation.turns else None
        self._clock = clock
        self._in_progress: _ReplyInProgress | None = None
        #: Called before each summarizer call with (this session, its prompt tokens, its reply
        #: cap); raising a `DashboardError` refuses it (the policy then drops instead). The
        #: application service checks the deployer's rate limits here.
        self.admit_summary: Callable[[ChatSession, int, int], None] | None = None

    @classmethod
    def start(cls, persona: Persona, backend: ChatBackend) -> ChatSession:
        """A new conversation with `persona`, on the persona's settings."""
        settings = ChatSettings(
            model=persona.model,
            context_budget=persona.context_budget,
            max_reply_tokens=persona.max_reply_tokens,
            # As plain data: a cached persona may hold a Sampling of a module version since reloaded.
            sampling=Sampling.model_validate(persona.sampling.model_dump()),
            context_policy=persona.context_policy,
            low_water=persona.low_water,
            summarizer_model=persona.summarizer_model,
        )
        return cls(Conversation(system_message(persona), settings, persona_id=persona.id), backend)

    # --- reading -----------------------------------------------------------------------------

    @property
    def settings(self) -> ChatSettings:
        return self.conversation.settings

    @property
    def counting(self) -> Counting:
        """How this session's tokens are counted (`core.counting.methods`): `counting.attach(conversation)`
        installs the method, whose label is `conversation.tokenizer.method`."""
        return counting_for(self.backend)

    @property
    def policy(self) -> ContextPolicy:
        return policy_named(self.settings.context_policy)

    @property
    def replying(self) -> bool:
        """True while a reply is streaming."""
        return self._in_progress is not None

    @property
    def partial_reply(self) -> str | None:
        """The text so far of the reply streaming now (None when none is)."""
        in_progress = self._in_progress
        return in_progress.stream.text if in_progress is not None else None

    @property
    def can_retry(self) -> bool:
        return self.conversation.pending_user_message is not None

    @property
    def can_regenerate(self) -> bool:
        return self.conversation.last_reply is not None

    @property
    def can_continue(self) -> bool:
        """The last reply ended early: at the reply cap, or interrupted (stopped, broken off, or
        recovered after the server stopped mid-reply)."""
        reply = self.conversation.last_reply
        return reply is not None and (reply.cut_off or reply.interrupted)

    # --- changing ----------------------------------------------------------------------------

    def update_settings(self, **changes: Any) -> ChatSettings:
        """Change settings (validated) for the calls from now on; unchanged values cost nothing."""
        current = self.settings
        if all(getattr(current, name) == value for name, value in changes.items()):
            return current
        return self.conversation.update_settings(**changes)

    def send(self, text: str) -> Iterator[str]:
        """Add the user's message now and return its reply's chunks (see the module docstring)."""
        self.stop()
        self.conversation.add_user(text)
        return self._reply()

    def retry(self) -> Iterator[str]:
        """Send the pending user message again (after a failure)."""
        if not self.can_retry:
            raise ConversationStateError("There is no unanswered message to send again.").coded(
                "nothing_to_resend"
            )
        self.stop()
        return self._reply()

    def regenerate(self) -> Iterator[str]:
        """Set the last answer aside (kept, marked regenerated) and ask again."""
        self.stop()
        self.conversation.regenerate()
        return self._reply()

    def continue_reply(self) -> Iterator[str]:
        """Ask the model to go on with a reply the reply cap cut off, or that was interrupted.

        The request to continue is recorded as a user message the dashboard wrote, since the
        model sees it; the continuation is the next answer.
        """
        if not self.can_continue:
            raise ConversationStateError(
                "The last reply was not cut off by the reply cap or interrupted."
            ).coded("nothing_to_continue")
        self.stop()
        reply = self.conversation.last_reply
        prompt = CONTINUE_PROMPT if reply is not None and reply.cut_off else CONTINUE_INTERRUPTED_PROMPT
        self.conversation.add_user(prompt, automatic=True)
        return self._reply()

    def stop(self) -> Turn | None:
        """End the reply in progress, if any: hang up and keep what arrived, marked interrupted."""
        in_progress = self._in_progress
        return self._end(in_progress) if in_progress is not None else None

    # --- a turn ------------------------------------------------------------------------------

    def _reply(self) -> Iterator[str]:
        self.error = None
        return self._stream_reply(self._clock())

    def _stream_reply(self, started: float) -> Iterator[str]:
        settings = self.settings
        counting = self.counting
        try:
            counting.before_fit(self.conversation)
            messages = self.policy.fit(self.conversation, complete=self.summarize)
            messages = counting.after_fit(self.conversation, self.policy, messages)
            if (going_out := REQUEST_GOING_OUT.get()) is not None:
                going_out()
            stream = self.backend.stream(
                ChatRequest(
                    messages=messages,
                    model=settings.model,
                    max_reply_tokens=settings.max_reply_tokens,
                    sampling=settings.sampling,
                )
            )
        except DashboardError as error:
            self.error = error
            raise
        in_progress = self._in_progress = _ReplyInProgress(stream, started)
        try:
            for chunk in stream:
                yield chunk
                if self._in_progress is not in_progress:
                    return  # stopped while the consumer held this chunk
        except BackendError as error:
            if self._in_progress is in_progress:
                self._end(in_progress, partial=stream.text or error.partial_text)
            self.error = error
            raise
        except GeneratorExit:
            # The consumer walked away without stop() (e.g. the page reran): the same as a stop.
            if self._in_progress is in_progress:
                self._end(in_progress)
            raise
        except BaseException:
            if self._in_progress is in_progress:
                self._end(in_progress)
            raise
        if self._in_progress is not in_progress:
            return
        self._in_progress = None
        if not stream.text:
            # Not something the assistant said: nothing is recorded and the question stays pending.
            message = f"The model sent an empty reply (finish reason: {stream.finish_reason})."
            if stream.finish_reason == "length":
                message += " Raise the reply cap: reasoning models can spend all of it on thinking."
            self.error = EmptyReply(message, finish_reason=stream.finish_reason).coded(
                "empty_reply_length" if stream.finish_reason == "length" else "empty_reply",
                finish_reason=stream.finish_reason or "?",
            )
            raise self.error
        self.last_turn = self.conversation.add_assistant(
            stream.text,
            stream.usage,
            usage_source="server" if self.backend.capabilities.server_usage else "local",
            latency_s=self._clock() - started,
            finish_reason=stream.finish_reason,
        )
        counting.after_turn(self.conversation, self.last_turn)

    def summarize(self, messages: list[dict[str, str]]) -> Completion:
        """One summarizer call (the policy's `complete`): not streamed to the page, read whole.

        On the summarizer backend (else the chat's), with the summarizer model, no sampling
        options, and a reply cap of at least the summary's share of the budget. Raises the
        backend's `DashboardError` when the call fails; the policy then drops instead.
        """
        settings = self.settings
        backend = self.summarizer_backend or self.backend
        model = settings.effective_summarizer_model
        reply_cap = min(MAX_REPLY_CAP, max(settings.max_reply_tokens, summary_cap(settings.context_budget)))
        if self.admit_summary is not None:
            count = self.conversation.tokenizer.count_text
            self.admit_summary(self, sum(count(m["content"]) for m in messages), reply_cap)
        stream = backend.stream(ChatRequest(messages=messages, model=model, max_reply_tokens=reply_cap))
        try:
            text = "".join(stream)
        finally:
            stream.close()
        return Completion(
            text,
            model=model,
            usage=stream.usage,
            usage_source="server" if backend.capabilities.server_usage else "local",
        )

    def _end(self, in_progress: _ReplyInProgress, *, partial: str | None = None) -> Turn | None:
        """Close the stream; record what it streamed (or `partial`) as an interrupted reply."""
        self._in_progress = None
        in_progress.stream.close()
        text = in_progress.stream.text if partial is None else partial
        if not text:
            return None
        self.last_turn = self.conversation.add_assistant(
            text, None, latency_s=self._clock() - in_progress.started, interrupted=True
        )
        return self.last_turn
