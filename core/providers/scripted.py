"""A backend whose replies are queued in advance, for tests and demos (like `llm`'s mock model).

    backend = ScriptedBackend()
    backend.enqueue("Hello!", ScriptedReply(chunks=["Once ", "upon"], error=StreamInterrupted("cut")))
    session = ChatSession(conversation, backend)

Each request takes the next queued reply; `requests` records every request as it was sent.
Usage is billed the way the OpenAI API bills it (counted with `core.counting.tokens`) unless a reply says
otherwise.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from core.counting.server_tokens import TokenizeClient
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.errors import BackendError
from core.providers.backends import Capabilities, ChatRequest, ReplyStream, Usage


@dataclass
class ScriptedReply:
    """One queued reply: its text (or its exact chunks), how it ends, and what usage it reports."""

    text: str = ""
    #: The deltas to stream; by default the text in one chunk.
    chunks: list[str] | None = None
    finish_reason: str | None = "stop"
    #: "billed": counted like the API; None: no usage chunk; or a `Usage` to report as is.
    usage: Usage | str | None = "billed"
    #: Raised by `stream()` before any text (refused), or after `error_after_chunks` chunks
    #: (broken off mid-reply, `partial_text` set to what streamed).
    error: BackendError | None = None
    error_after_chunks: int | None = None
    #: Set: each chunk waits for it, so a test can hold a reply open mid-stream.
    gate: threading.Event | None = None

    def deltas(self) -> list[str]:
        return list(self.chunks) if self.chunks is not None else ([self.text] if self.text else [])


class ScriptedReplyStream(ReplyStream):
    def __init__(self, request: ChatRequest, reply: ScriptedReply) -> None:
        super().__init__()
        self._request = request
        self._reply = reply
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def _chunks(self) -> Iterator[str]:
        reply = self._reply
        for sent, chunk in enumerate(reply.deltas()):
            if reply.error is not None and sent == reply.error_after_chunks:
                reply.error.partial_text = self.text
                raise reply.error
            if reply.gate is not None:
                reply.gate.wait(timeout=30)
            if self.closed:
                return
            yield chunk
        if reply.error is not None and reply.error_after_chunks is not None:
            reply.error.partial_text = self.text
            raise reply.error
        self.finish_reason = reply.finish_reason
        if isinstance(reply.usage, Usage):
            self.usage = reply.usage
        elif reply.usage == "billed":
            model = self._request.model
            self.usage = Usage(
                prompt_tokens=count_prompt_tokens(self._request.messages, model),
                completion_tokens=tokenizer_for(model).count_text(self.text),
            )


#: Not thread-safe: a shared queue would hand the replies to whichever column asks first.
SCRIPTED = Capabilities(server_usage=True, counting="local", cached_tokens=True, thread_safe=False)


@dataclass
class ScriptedBackend:
    """Streams the queued replies in order; raises `LookupError` when none is left."""

    replies: deque[ScriptedReply] = field(default_factory=deque)
    requests: list[ChatRequest] = field(default_factory=list)
    capabilities: Capabilities = SCRIPTED

    def enqueue(self, *replies: str | ScriptedReply) -> ScriptedBackend:
        for reply in replies:
            self.replies.append(ScriptedReply(text=reply) if isinstance(reply, str) else reply)
        return self

    def tokenize_client(self) -> TokenizeClient | None:
        return None

    def stream(self, request: ChatRequest) -> ScriptedReplyStream:
        self.requests.append(request)
        if not self.replies:
            raise LookupError("ScriptedBackend: no reply is queued for this request.")
        reply = self.replies.popleft()
        if reply.error is not None and reply.error_after_chunks is None:
            raise reply.error
        return ScriptedReplyStream(request, reply)
