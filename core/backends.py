"""What a chat backend takes and gives back, and the OpenAI-compatible backend.

A backend turns a `ChatRequest` into a `ReplyStream`: iterate it for text chunks as they arrive;
once it is exhausted, `.usage` holds the token usage the server reported (None when it sent
none) and `.finish_reason` why the reply ended. A failure raises a `core.errors.BackendError`
whose `partial_text` keeps what had streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class Sampling(BaseModel):
    """Sampling options sent with each request; an option left unset is not sent at all."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2, description="Randomness; 0 is most deterministic.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling probability mass.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Penalty for repeating any topic.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Penalty for repeating tokens.")
    seed: int | None = Field(
        None, description="Best-effort deterministic sampling where the server supports it."
    )


class Usage(BaseModel):
    """Token usage as the server reported it."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class ChatRequest(BaseModel):
    """One model call: the messages exactly as they are sent, and the options that go with them."""

    messages: list[dict[str, str]]
    model: str
    max_reply_tokens: int | None = Field(None, ge=1)
    sampling: Sampling = Sampling()


class ReplyStream:
    """Text chunks of one reply. Subclasses implement `_chunks`; this class keeps the record."""

    def __init__(self) -> None:
        self.text = ""
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def _chunks(self) -> Iterator[str]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks():
            self.text += chunk
            yield chunk


class ChatBackend(Protocol):
    """Anything that can stream a reply: the OpenAI-compatible backend and the offline model."""

    #: Shown to the user, e.g. "OpenAI-compatible (https://api.openai.com/v1)" or "Offline model".
    label: str
    #: True when usage comes from a real server's report, False when it is computed locally.
    reports_server_usage: bool

    def stream(self, request: ChatRequest) -> ReplyStream: ...
