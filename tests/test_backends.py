"""OpenAIBackend driving the real `openai` SDK over real HTTP against the local test server."""

from __future__ import annotations

import email.utils
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from core.chat.prompt_cache import PREFIX_RULE, PromptCache
from core.chat.settings import MAX_REPLY_CAP, Sampling
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.errors import (
    AuthenticationFailed,
    BackendError,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    ReplyTooLong,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
)
from core.providers.backends import (
    MAX_EVENT_BYTES,
    MAX_REPORTED_TOKENS,
    ChatRequest,
    OpenAIBackend,
    OpenAIReplyStream,
    Usage,
    parse_retry_after,
    reply_size_limit,
    scrub_secrets,
    uses_max_completion_tokens,
)
from tests.openai_server import OpenAIServer, echo_reply, split_chunks, unused_port

KEY = "sk-test-SECRET-123456"
MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy, in one short word please?"},
]
REPLY = echo_reply(MESSAGES)


def make_backend(server: OpenAIServer, **kwargs: Any) -> OpenAIBackend:
    kwargs = {"timeout": 5.0, "max_retries": 0, **kwargs}
    return OpenAIBackend(KEY, server.base_url, **kwargs)


def make_request(model: str = MODEL, **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=MESSAGES, model=model, **kwargs)


def assert_no_key(*objects: object) -> None:
    for obj in objects:
        for text in (str(obj), repr(obj)):
            assert KEY not in text
            assert "SECRET" not in text
            assert "sk-" not in text


def assert_recovers(server: OpenAIServer, backend: OpenAIBackend) -> None:
    """After a fault, the next request gets the whole reply."""
    stream = backend.stream(make_request())
    assert "".join(stream) == REPLY
    assert stream.finish_reason == "stop"


# --- happy path --------------------------------------------------------------------------------


def long_chat(turns: int) -> list[list[dict[str, str]]]:
    """The prompts of a chat that only appends, from about 1,100 tokens up."""
    history = [{"role": "system", "content": "You are a patient cook. " + "Knead gently. " * 300}]
    prompts = []
    for i in range(turns):
        history.append({"role": "user", "content": f"Question {i}: " + "how long should dough rest? " * 20})
        prompts.append(list(history))
        history.append({"role": "assistant", "content": f"Answer {i}: " + "an hour, covered. " * 20})
    return prompts


@pytest.mark.parametrize("fields", ["openai", "deepseek"])
def test_cached_tokens_follow_openais_rule_through_the_sdk(openai_server: OpenAIServer, fields: str) -> None:
    openai_server.cache_fields = fields  # type: ignore[assignment]
    backend = make_backend(openai_server)
    usages = []
    for messages in long_chat(3):
        stream = backend.stream(ChatRequest(messages=messages, model=MODEL))
        list(stream)
        assert stream.usage is not None
        usages.append(stream.usage)
    assert usages[0].prompt_tokens > 1024 and usages[0].cached_prompt_tokens == 0  # nothing seen yet
    tokenizer = tokenizer_for(MODEL)
    for before, usage in zip(long_chat(3), usages[1:], strict=False):
        # The earlier prompt, up to its reply priming, is this prompt's prefix: 1,024 tokens and
        # then whole blocks of 128.
        shared = count_prompt_tokens(before, MODEL) - tokenizer.reply_priming
        assert usage.cached_prompt_tokens == 1024 + (shared - 1024) // 128 * 128
        assert usage.cached_prompt_tokens < shared  # a partial block is not served from cache


def test_a_plain_prefix_cache_serves_short_prompts(openai_server: OpenAIServer) -> None:
    openai_server.prompt_cache = PromptCache(PREFIX_RULE)
    backend = make_backend(openai_server)
    first = backend.stream(ChatRequest(messages=MESSAGES[:2], model=MODEL))
    list(first)
    second = backend.stream(make_request())
    list(second)
    assert first.usage is not None and first.usage.cached_prompt_tokens == 0
    tokenizer = tokenizer_for(MODEL)
    shared = count_prompt_tokens(MESSAGES[:2], MODEL) - tokenizer.reply_priming
    assert second.usage is not None and second.usage.cached_prompt_tokens == shared < 1024


def test_streams_the_reply_in_order_with_usage_and_finish_reason(openai_server: OpenAIServer) -> None:
    backend = make_backend(openai_server)
    request = make_request(max_reply_tokens=100, sampling=Sampling(temperature=0.2, top_p=0.9, seed=7))

    stream = backend.stream(request)
    chunks = list(stream)

    assert isinstance(stream, OpenAIReplyStream)
    assert chunks == split_chunks(REPLY)
    assert len(chunks) > 3
    assert stream.text == "".join(chunks) == REPLY
    assert stream.finish_reason == "stop"
    assert stream.usage == Usage(
        prompt_tokens=count_prompt_tokens(MESSAGES, MODEL),
        completion_tokens=tokenizer_for(MODEL).count_text(REPLY),
        cached_prompt_tokens=0,  # a short prompt, never cached by OpenAI's rule
    )

    [sent] = openai_server.chat_requests
    assert sent.body["messages"] == MESSAGES
    assert sent.body["model"] == MODEL
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert (sent.body["temperature"], sent.body["top_p"], sent.body["seed"]) == (0.2, 0.9, 7)
    for unset in ("presence_penalty", "frequency_penalty", "max_completion_tokens"):
        assert unset not in sent.body
    assert sent.body["max_tokens"] == 100
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_chunks_arrive_while_the_server_is_still_streaming(openai_server: OpenAIServer) -> None:
    openai_server.chunk_delay = 0.05
    stream = make_backend(openai_server).stream(make_request())
    arrivals = []
    for _ in stream:
        arrivals.append(time.monotonic())
    assert len(arrivals) == len(split_chunks(REPLY))
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 2)


def test_options_left_unset_are_not_sent(openai_server: OpenAIServer) -> None:
    list(make_backend(openai_server).stream(make_request()))
    body = openai_server.chat_requests[0].body
    assert set(body) == {"model", "messages", "stream", "stream_options"}


def test_the_body_is_the_one_the_sdks_typed_path_sends(openai_server: OpenAIServer) -> None:
    """The messages skip the SDK's schema walk (they go through `extra_body`): the body the server
    reads is still the one `create(**request_params)` sends, key for key and in the same order."""
    backend = make_backend(openai_server)
    request = make_request(max_reply_tokens=50, sampling={"temperature": 0.3, "top_p": 0.9})
    list(backend.stream(request))
    client = openai.OpenAI(api_key=KEY, base_url=openai_server.base_url, max_retries=0, timeout=5.0)
    list(client.chat.completions.create(**backend.request_params(request)))
    ours, typed = (recorded.body for recorded in openai_server.chat_requests)
    assert ours["messages"] == MESSAGES
    assert json.dumps(ours) == json.dumps(typed)


@pytest.mark.parametrize(
    ("model", "cap_key"),
    [
        ("gpt-4o-mini", "max_tokens"),
        ("gpt-4.1", "max_tokens"),
        ("llama3.2", "max_tokens"),
        ("o1-mini", "max_completion_tokens"),
        ("o3-mini", "max_completion_tokens"),
        ("o4-mini", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("openai/gpt-5", "max_completion_tokens"),
    ],
)
def test_reply_cap_is_sent_under_the_name_the_model_family_understands(
    openai_server: OpenAIServer, model: str, cap_key: str
) -> None:
    stream = make_backend(openai_server).stream(make_request(model, max_reply_tokens=3))
    text = "".join(stream)

    body = openai_server.chat_requests[0].body
    other = "max_tokens" if cap_key == "max_completion_tokens" else "max_completion_tokens"
    assert body[cap_key] == 3
    assert other not in body
    assert stream.finish_reason == "length"
    assert stream.usage is not None and stream.usage.completion_tokens == 3
    assert REPLY.startswith(text)


def test_no_usage_chunk_leaves_usage_none(openai_server: OpenAIServer) -> None:
    openai_server.omit_usage()
    stream = make_backend(openai_server).stream(make_request())
    assert "".join(stream) == REPLY
    assert stream.finish_reason == "stop"
    assert stream.usage is None


def test_host_and_repr_name_the_server_never_the_key(openai_server: OpenAIServer) -> None:
    backend = make_backend(openai_server)
    assert backend.host == f"127.0.0.1:{openai_server.port}"
    assert backend.capabilities.server_usage is True
    assert openai_server.base_url in repr(backend)
    assert_no_key(backend, backend.host)


def test_defaults_come_from_the_sdks_environment_variables(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    backend = OpenAIBackend(max_retries=0)
    assert "".join(backend.stream(make_request())) == REPLY
    assert openai_server.chat_requests[0].headers["authorization"] == f"Bearer {KEY}"

    monkeypatch.delenv("OPENAI_BASE_URL")
    official = OpenAIBackend()
    assert official.host == "api.openai.com"
    assert official.base_url == "https://api.openai.com/v1"
    assert_no_key(official)


def test_a_missing_key_is_an_authentication_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AuthenticationFailed, match="OPENAI_API_KEY"):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1")


def test_userinfo_in_the_base_url_is_not_shown(openai_server: OpenAIServer) -> None:
    backend = OpenAIBackend(KEY, f"http://user:hunter2@127.0.0.1:{openai_server.port}/v1")
    assert "hunter2" not in repr(backend)
    assert "hunter2" not in backend.host and "hunter2" not in backend.base_url


def test_closing_a_stream_early_releases_it(openai_server: OpenAIServer) -> None:
    backend = make_backend(openai_server)
    stream = backend.stream(make_request())
    first = next(iter(stream))
    stream.close()
    assert first == split_chunks(REPLY)[0]
    assert_recovers(openai_server, backend)


# --- faults ------------------------------------------------------------------------------------

Script = Callable[[OpenAIServer], None]


def _retry_date(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


FAULTS: dict[str, tuple[Script, type[BackendError], list[str]]] = {
    "401 echoing the key": (
        lambda s: s.fail(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key"),
        AuthenticationFailed,
        ["401", "API key", "Incorrect API key provided"],
    ),
    "401 echoing a masked key": (
        lambda s: s.fail(401, "Incorrect API key provided: sk-test-**********3456.", code="invalid_api_key"),
        AuthenticationFailed,
        ["401", "[redacted]"],
    ),
    "403": (
        lambda s: s.fail(403, "You are not allowed to sample from this model.", type="permission_error"),
        PermissionDenied,
        ["403", "not allowed to sample"],
    ),
    "404": (
        lambda s: s.fail(404, f"The model `{MODEL}` does not exist.", code="model_not_found"),
        ModelNotFound,
        ["404", "model name", "base URL"],
    ),
    "400": (
        lambda s: s.fail(400, "Unsupported value: 'temperature'.", param="temperature"),
        BadRequest,
        ["400", "Unsupported value: 'temperature'"],
    ),
    "422": (lambda s: s.fail(422, "Field required: messages."), BadRequest, ["422", "Field required"]),
    "429 without Retry-After": (
        lambda s: s.fail(429, "Rate limit reached.", type="requests", code="rate_limit_exceeded"),
        RateLimited,
        ["429", "Rate limit reached", "Wait a little"],
    ),
    "429 Retry-After seconds": (
        lambda s: s.fail(429, "Rate limit reached.", headers={"Retry-After": "17"}),
        RateLimited,
        ["429", "Try again in 17 seconds"],
    ),
    "429 Retry-After date": (
        lambda s: s.fail(429, "Rate limit reached.", headers={"Retry-After": _retry_date(90)}),
        RateLimited,
        ["429", "Try again in"],
    ),
    "429 no quota": (
        lambda s: s.fail(429, "You exceeded your current quota.", code="insufficient_quota"),
        RateLimited,
        ["429", "quota", "billing"],
    ),
    "500": (lambda s: s.fail(500, "The server had an error.", type="server_error"), ServerError, ["500"]),
    "503": (lambda s: s.fail(503, "The engine is overloaded."), ServerError, ["503", "overloaded"]),
    "502 HTML page": (
        lambda s: s.send_raw("<html><body><h1>502 Bad Gateway</h1></body></html>", status=502),
        ServerError,
        ["502"],
    ),
    "timeout": (lambda s: s.delay(3), RequestTimedOut, ["did not answer within 0.5 s"]),
    "HTML page instead of a stream": (
        lambda s: s.send_raw("<html><body>Welcome to nginx!</body></html>"),
        BadResponse,
        ["text/html", "not an event stream", "base URL"],
    ),
    "non-JSON chunk": (lambda s: s.send_bad_chunk(after_chunks=2), BadResponse, ["not OpenAI-compatible"]),
    "error event mid-stream": (
        lambda s: s.send_bad_chunk(json.dumps({"error": {"message": f"Overloaded ({KEY})"}}), after_chunks=2),
        BackendError,
        ["Overloaded", "[redacted]"],
    ),
    "stall mid-stream": (lambda s: s.stall(3, after_chunks=2), RequestTimedOut, ["stopped sending"]),
    "cut chunked stream": (lambda s: s.cut_stream(3), StreamInterrupted, ["broke"]),
    "cut stream ending cleanly": (
        lambda s: s.cut_stream(3, framing="close"),
        StreamInterrupted,
        ["ended before the server said it was finished"],
    ),
    "302 redirect (not followed)": (
        lambda s: s.redirect("http://127.0.0.1:9/v1/chat/completions"),
        BackendError,
        ["HTTP 302", "not followed"],
    ),
    "huge event with no end of line": (
        lambda s: s.send_bad_chunk("x" * (MAX_EVENT_BYTES + 10), after_chunks=1),
        ReplyTooLong,
        ["single event of more than"],
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_raises_a_specific_error_without_the_key_and_the_next_request_succeeds(
    openai_server: OpenAIServer, name: str
) -> None:
    script, error_class, fragments = FAULTS[name]
    backend = make_backend(openai_server, timeout=0.5)
    script(openai_server)

    received: list[str] = []
    with pytest.raises(BackendError) as caught:
        received.extend(backend.stream(make_request()))
    error = caught.value

    assert type(error) is error_class
    message = str(error)
    for fragment in fragments:
        assert fragment in message
    assert f"127.0.0.1:{openai_server.port}" in message
    if not isinstance(error, ConnectionFailed):
        assert repr(MODEL) in message
    assert error.partial_text == "".join(received)
    # No chained SDK error: it holds the request, Authorization header included.
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    assert_no_key(error, error.partial_text, backend)
    assert_recovers(openai_server, backend)


@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("after", [0, 1, 4])
def test_a_cut_stream_keeps_exactly_the_chunks_received(
    openai_server: OpenAIServer, framing: Any, after: int
) -> None:
    openai_server.cut_stream(after, framing=framing)
    stream = make_backend(openai_server).stream(make_request())
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as caught:
        received.extend(stream)
    assert received == split_chunks(REPLY)[:after]
    assert caught.value.partial_text == stream.text == "".join(received)
    assert stream.finish_reason is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [("17", 17.0), ("0", 0.0), ("2.5", 2.5), ("date in 90 s", 90.0), ("soon", None)],
)
def test_rate_limit_retry_after_is_parsed(
    openai_server: OpenAIServer, header: str, expected: float | None
) -> None:
    if header.startswith("date"):
        header = _retry_date(90)
    openai_server.fail(429, "Rate limit reached.", headers={"Retry-After": header})
    with pytest.raises(RateLimited) as caught:
        make_backend(openai_server).stream(make_request())
    if expected is None:
        assert caught.value.retry_after is None
    else:
        assert caught.value.retry_after == pytest.approx(expected, abs=2)


def test_rate_limit_without_retry_after_has_none(openai_server: OpenAIServer) -> None:
    openai_server.fail(429, "Rate limit reached.")
    with pytest.raises(RateLimited) as caught:
        make_backend(openai_server).stream(make_request())
    assert caught.value.retry_after is None
    assert caught.value.retryable


def test_a_wrong_key_gets_the_servers_masked_echo_scrubbed(openai_server: OpenAIServer) -> None:
    openai_server.api_key = "sk-the-right-one-000000"
    backend = make_backend(openai_server)
    with pytest.raises(AuthenticationFailed) as caught:
        backend.stream(make_request())
    assert "Incorrect API key provided: [redacted]" in str(caught.value)
    assert_no_key(caught.value)
    openai_server.api_key = KEY
    assert_recovers(openai_server, backend)


def test_connection_refused(openai_server: OpenAIServer) -> None:
    port = unused_port()
    backend = OpenAIBackend(KEY, f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=0)
    with pytest.raises(ConnectionFailed) as caught:
        backend.stream(make_request())
    message = str(caught.value)
    assert f"Could not connect to 127.0.0.1:{port}" in message
    assert "is the server running?" in message
    assert caught.value.partial_text == ""
    assert_no_key(caught.value, backend)


# --- stream_options fallback and retries ---------------------------------------------------------


def test_a_server_rejecting_stream_options_gets_the_request_again_without_it(
    openai_server: OpenAIServer,
) -> None:
    openai_server.rejects_stream_options = True
    backend = make_backend(openai_server)

    stream = backend.stream(make_request())
    assert "".join(stream) == REPLY
    assert stream.usage is None  # such servers send no usage
    first, second = openai_server.chat_requests
    assert "stream_options" in first.body
    assert "stream_options" not in second.body
    assert second.body["messages"] == MESSAGES

    # The backend remembers: later requests go out without stream_options at once.
    assert "".join(backend.stream(make_request())) == REPLY
    assert len(openai_server.chat_requests) == 3
    assert "stream_options" not in openai_server.chat_requests[2].body


def test_other_bad_requests_are_not_resent(openai_server: OpenAIServer) -> None:
    openai_server.fail(400, "Unsupported parameter: 'seed'.", param="seed")
    with pytest.raises(BadRequest):
        make_backend(openai_server).stream(make_request())
    assert len(openai_server.chat_requests) == 1


def test_the_sdk_retries_a_503_and_the_reply_arrives(openai_server: OpenAIServer) -> None:
    openai_server.fail(503, "The engine is overloaded.")
    stream = make_backend(openai_server, max_retries=1).stream(make_request())
    assert "".join(stream) == REPLY
    first, second = openai_server.chat_requests
    assert second.body == first.body
    assert second.headers["x-stainless-retry-count"] == "1"


def test_client_errors_are_not_retried(openai_server: OpenAIServer) -> None:
    openai_server.fail(401, "Incorrect API key provided.")
    with pytest.raises(AuthenticationFailed):
        make_backend(openai_server, max_retries=2).stream(make_request())
    assert len(openai_server.chat_requests) == 1


def test_retries_are_bounded(openai_server: OpenAIServer) -> None:
    for _ in range(3):
        openai_server.fail(500, "The server had an error.", headers={"retry-after-ms": "10"})
    with pytest.raises(ServerError):
        make_backend(openai_server, max_retries=2).stream(make_request())
    assert len(openai_server.chat_requests) == 3


# --- helpers -----------------------------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": _retry_date(60)}) == pytest.approx(60, abs=2)
    assert parse_retry_after({"retry-after": _retry_date(-60)}) == 0.0
    assert parse_retry_after({"retry-after": "later"}) is None
    assert parse_retry_after({}) is None


def test_scrub_secrets() -> None:
    assert scrub_secrets(f"key {KEY} here", KEY) == "key [redacted] here"
    assert "sk-" not in scrub_secrets("Incorrect API key provided: sk-proj-abcd****wxyz.")
    assert scrub_secrets("token abcd********wxyz.") == "token [redacted]."
    assert scrub_secrets("nothing secret here") == "nothing secret here"


def test_scrub_secrets_also_finds_the_key_without_its_prefix() -> None:
    key = "sk-proj-Q1w2E3r4T5y6U7i8"
    for echo in (key, "proj-Q1w2E3r4T5y6U7i8", "Q1w2E3r4T5y6U7i8"):
        assert scrub_secrets(f"key {echo}.", key) == "key [redacted]."


def test_usage_is_bounded() -> None:
    assert Usage(prompt_tokens=MAX_REPORTED_TOKENS, completion_tokens=0).prompt_tokens == MAX_REPORTED_TOKENS
    for bad in (-1, MAX_REPORTED_TOKENS + 1, 10**20):
        with pytest.raises(ValueError):
            Usage(prompt_tokens=bad, completion_tokens=1)


def test_reply_size_limit_follows_the_reply_cap() -> None:
    assert reply_size_limit(1) == 8 + 64 * 1024
    assert reply_size_limit(4096) == 4096 * 8 + 64 * 1024
    assert reply_size_limit(None) == reply_size_limit(MAX_REPLY_CAP)


def test_a_client_for_a_typed_url_needs_its_key_and_url_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    with pytest.raises(BackendError, match="explicitly"):
        OpenAIBackend(None, "http://127.0.0.1:9/v1", isolated=True)


def test_requests_ask_for_an_uncompressed_reply(openai_server: OpenAIServer) -> None:
    list(make_backend(openai_server).stream(make_request()))
    assert openai_server.chat_requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("o1", True), ("o3-mini", True), ("gpt-5.1", True), ("gpt-4o", False), ("llama3.2", False)],
)
def test_uses_max_completion_tokens(model: str, expected: bool) -> None:
    assert uses_max_completion_tokens(model) is expected


# --- the test server itself ----------------------------------------------------------------------


def test_server_speaks_non_streaming_json_and_lists_models(openai_server: OpenAIServer) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=openai_server.base_url, max_retries=0)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_prompt_tokens(MESSAGES, MODEL)
    assert MODEL in [model.id for model in client.models.list()]


def test_server_can_be_scripted_over_http(openai_server: OpenAIServer) -> None:
    control = f"http://127.0.0.1:{openai_server.port}/_control/"
    fault = json.dumps({"status": 503, "error": {"message": "Scripted over HTTP."}}).encode()
    with urllib.request.urlopen(urllib.request.Request(control + "faults", data=fault, method="POST")):
        pass
    backend = make_backend(openai_server)
    with pytest.raises(ServerError, match="Scripted over HTTP"):
        backend.stream(make_request())
    with urllib.request.urlopen(control + "requests") as response:
        recorded = json.load(response)
    assert recorded[-1]["body"]["model"] == MODEL
    with urllib.request.urlopen(urllib.request.Request(control + "reset", data=b"{}", method="POST")):
        pass
    assert openai_server.requests == []
