"""What the OpenAI-compatible and Anthropic backends share (`core.providers.backends.HttpChatBackend`): the
per-reply time limit, the size cut and the typed errors, each checked on both backends over
real HTTP against their local test servers (tests/openai_server.py, tests/anthropic_server.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from core.errors import (
    AuthenticationFailed,
    BackendError,
    BadRequest,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    ReplyTimeLimit,
    ReplyTooLong,
    ServerError,
)
from core.i18n import translator
from core.providers.anthropic_backend import AnthropicBackend
from core.providers.backends import ChatRequest, HttpChatBackend, OpenAIBackend, reply_size_limit
from tests.anthropic_server import running_anthropic_server
from tests.openai_server import running_server

KEY = "sk-ant-test-SECRET-0123456789"
LONG_QUESTION = " ".join(f"word{i}" for i in range(60))


@dataclass
class Served:
    """One backend and its test server, scripted the same way whichever API it speaks."""

    make: Callable[..., HttpChatBackend]
    fail: Callable[[int, str, dict[str, str]], None]
    set_chunk_delay: Callable[[float], None]
    model: str


@pytest.fixture(params=["openai", "anthropic"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    if request.param == "openai":
        with running_server() as server:

            def fail_openai(status: int, message: str, headers: dict[str, str]) -> None:
                server.fail(status, message, headers=headers)

            yield Served(
                lambda **options: OpenAIBackend(KEY, server.base_url, max_retries=0, **options),
                fail_openai,
                lambda seconds: setattr(server, "chunk_delay", seconds),
                "gpt-4o-mini",
            )
    else:
        with running_anthropic_server() as anthropic:

            def fail_anthropic(status: int, message: str, headers: dict[str, str]) -> None:
                anthropic.fail(status, message, **headers)

            yield Served(
                lambda **options: AnthropicBackend(KEY, anthropic.base_url, max_retries=0, **options),
                fail_anthropic,
                lambda seconds: setattr(anthropic, "chunk_delay", seconds),
                "claude-sonnet-4-5",
            )


def in_chinese(error: BackendError) -> str:
    return translator("zh-CN")(f"error.{error.code}", message=str(error), **error.fields)


def ask(served: Served, text: str = "hello", cap: int | None = None) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], model=served.model, max_reply_tokens=cap)


def test_a_slow_reply_is_cut_at_the_reply_time_limit_and_keeps_its_text(served: Served) -> None:
    served.set_chunk_delay(0.1)  # 61 deltas: 6 s in all
    backend = served.make(timeout=5, reply_time_limit_s=1.5)
    started = time.monotonic()
    stream = backend.stream(ask(served, LONG_QUESTION))
    received: list[str] = []
    with pytest.raises(ReplyTimeLimit) as caught:
        received.extend(stream)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4, elapsed
    assert stream.cut_reason == "time" and caught.value.cut_reason == "time"
    assert caught.value.partial_text == stream.text == "".join(received)
    whole = "You said: " + LONG_QUESTION
    assert stream.text and whole.startswith(stream.text) and len(stream.text) < len(whole)
    assert caught.value.code == "reply_time_limit" and caught.value.fields["seconds"] == 1.5
    assert "1.5 s" in str(caught.value) and "REPLY_TIME_LIMIT_S" in str(caught.value)
    assert "1.5" in in_chinese(caught.value)


def test_a_reply_within_its_time_limit_is_whole(served: Served) -> None:
    served.set_chunk_delay(0.02)
    stream = served.make(timeout=5, reply_time_limit_s=5).stream(ask(served, "a quick one"))
    assert "".join(stream) == "You said: a quick one" and stream.finish_reason == "stop"
    assert stream.cut_reason is None and stream.usage is not None


def test_the_time_limit_runs_on_the_backends_clock(served: Served) -> None:
    # The clock jumps 10 s on every reading: the limit is passed at the first delta read after
    # the request, however fast the server is.
    ticks = iter(range(0, 10_000, 10))
    backend = served.make(timeout=5, reply_time_limit_s=15, clock=lambda: float(next(ticks)))
    with pytest.raises(ReplyTimeLimit):
        list(backend.stream(ask(served, LONG_QUESTION)))


def test_the_size_cut_keeps_exactly_the_limit(served: Served) -> None:
    # The limit a reply cap gives is 64 KiB or more; the test servers' echo is shorter, so this
    # stream's limit is set lower.
    backend = served.make(timeout=5)
    stream = backend.stream(ask(served, LONG_QUESTION, cap=4000))
    stream._size_limit = 40  # type: ignore[attr-defined]
    with pytest.raises(ReplyTooLong) as caught:
        list(stream)
    assert len(stream.text.encode()) == 40 and caught.value.partial_text == stream.text
    assert stream.cut_reason == "size" and reply_size_limit(4000) == 4000 * 8 + 64 * 1024


@pytest.mark.parametrize(
    ("status", "headers", "error", "code"),
    [
        (400, {}, BadRequest, "bad_request"),
        (401, {}, AuthenticationFailed, "auth_failed"),
        (403, {}, PermissionDenied, "permission_denied"),
        (404, {}, ModelNotFound, "model_not_found"),
        (429, {"retry-after": "7"}, RateLimited, "rate_limited_wait"),
        (429, {}, RateLimited, "rate_limited"),
        (500, {}, ServerError, "server_error"),
        (529, {}, Overloaded, "overloaded"),
    ],
)
def test_the_same_status_is_the_same_typed_error_on_both_apis(
    served: Served, status: int, headers: dict[str, str], error: type[BackendError], code: str
) -> None:
    served.fail(status, f"Scripted failure for key {KEY}.", headers)
    with pytest.raises(error) as caught:
        served.make(timeout=5).stream(ask(served))
    found = caught.value
    assert type(found) is error and found.code == code and found.status_code == status
    assert found.retry_after == (7.0 if headers else None)
    assert found.retryable is (status >= 429)
    assert "Server says: Scripted failure for key [redacted]" in str(found)
    assert KEY not in str(found) and KEY not in str(found.fields)
    assert in_chinese(found) != str(found) and served.make(timeout=5).host in in_chinese(found)


def test_a_server_that_may_not_be_quoted_is_not(served: Served) -> None:
    served.fail(500, "INTERNAL: db_password=hunter2", {})
    with pytest.raises(ServerError) as caught:
        served.make(timeout=5, quote_server_text=False).stream(ask(served))
    assert "hunter2" not in str(caught.value) and caught.value.request_id is None
