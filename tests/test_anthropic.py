"""The Anthropic provider: the official `anthropic` SDK over real HTTP against the local
Anthropic-compatible server (tests/anthropic_server.py)."""

from __future__ import annotations

import itertools

import pytest

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.counting.model_info import load_model_table
from core.counting.tokens import METHOD_SERVER
from core.errors import AuthenticationFailed, BackendError, Overloaded, RateLimited, ServerError
from core.providers.anthropic_backend import AnthropicBackend
from core.providers.backends import ChatRequest, OpenAIBackend
from core.providers.connection import Connection
from core.stats import totals
from tests.anthropic_server import AnthropicServer, api_key_of

KEY = "sk-ant-test-SECRET-0123456789"
MODEL = "claude-sonnet-4-5"
MESSAGES = [
    {"role": "system", "content": "You are a terse cook."},
    {"role": "user", "content": "How long do I boil an egg? 煮鸡蛋要多久？🥚"},
]


def backend_for(server: AnthropicServer) -> AnthropicBackend:
    return AnthropicBackend(KEY, server.base_url, max_retries=0, timeout=5.0)


def test_a_reply_streams_with_its_usage(anthropic_server: AnthropicServer) -> None:
    stream = backend_for(anthropic_server).stream(
        ChatRequest(messages=MESSAGES, model=MODEL, max_reply_tokens=200)
    )
    chunks = list(stream)
    assert "".join(chunks) == stream.text == "You said: " + MESSAGES[1]["content"] and len(chunks) > 3
    assert stream.finish_reason == "stop"
    [sent] = anthropic_server.message_requests
    assert stream.usage is not None
    assert stream.usage.prompt_tokens == anthropic_server.input_tokens(sent.body)
    assert stream.usage.completion_tokens > 0 and stream.usage.cached_prompt_tokens == 0
    # The system prompt goes as `system`, the rest as messages; the key in x-api-key.
    assert sent.body["system"][0]["text"] == "You are a terse cook."
    assert [m["role"] for m in sent.body["messages"]] == ["user"]
    assert api_key_of(sent) == KEY and sent.body["stream"] is True


def test_a_reply_at_the_cap_is_length(anthropic_server: AnthropicServer) -> None:
    stream = backend_for(anthropic_server).stream(
        ChatRequest(messages=MESSAGES, model=MODEL, max_reply_tokens=3)
    )
    list(stream)
    assert (
        stream.finish_reason == "length" and stream.usage is not None and stream.usage.completion_tokens == 3
    )


def chat_session(server: AnthropicServer, system: str, budget: int = 100_000) -> ChatSession:
    settings = ChatSettings(model=MODEL, context_budget=budget, context_policy="stable_prefix")
    return ChatSession(Conversation(system, settings), backend_for(server))


def test_counts_are_the_servers_own_and_match_what_it_bills(anthropic_server: AnthropicServer) -> None:
    session = chat_session(
        anthropic_server, "You are a warm food guide. 你是一位热情的美食向导。", budget=300
    )
    for i in range(8):
        assert "".join(session.send(f"Question {i}: 北京烤鸭 🦆 for {i + 2} people, how many pancakes?"))
    turns = session.conversation.turns
    assert [t.counted_prompt_tokens for t in turns] == [t.reported_prompt_tokens for t in turns]
    assert session.conversation.tokenizer.method == METHOD_SERVER
    assert session.conversation.trim_events  # the exact counts fit it to its budget
    assert all(t.reported_prompt_tokens <= 300 for t in turns)
    counted = [r for r in anthropic_server.requests if r.path == "/v1/messages/count_tokens"]
    assert counted and all(api_key_of(r) == KEY for r in counted)


def test_cache_breakpoints_sit_at_the_stable_prefix_and_reads_are_priced(
    anthropic_server: AnthropicServer,
) -> None:
    system = "You are a patient cook. " + "Knead gently and rest the dough. " * 200
    session = chat_session(anthropic_server, system)
    for i in range(4):
        assert "".join(session.send(f"Question {i}: how long should dough rest? " * 5))
    # Breakpoints: after the system prompt and after the newest user message, nowhere else.
    body = anthropic_server.message_requests[-1].body
    assert "cache_control" in body["system"][-1]
    marked = [i for i, m in enumerate(body["messages"]) if "cache_control" in m["content"][-1]]
    assert marked == [len(body["messages"]) - 1]
    turns = session.conversation.turns
    assert turns[0].cached_tokens == 0 and turns[0].cache_write_tokens > 1024
    for before, turn in itertools.pairwise(turns):
        # Each call reads what the one before wrote, and writes only what it added.
        assert turn.cached_tokens == before.cached_tokens + before.cache_write_tokens
        assert 0 < turn.cache_write_tokens < 200
    result = totals(session.conversation, load_model_table())
    assert result.cache_hit_rate > 0.6 and result.cache_saved is not None and result.cache_saved > 0


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (401, {}, AuthenticationFailed, None),
        (429, {"retry-after": "7"}, RateLimited, 7.0),
        (529, {}, Overloaded, None),
        (500, {}, ServerError, None),
    ],
)
def test_errors_are_typed_with_their_data(anthropic_server, status, headers, error, retry_after) -> None:
    anthropic_server.fail(status, "Scripted failure.", **headers)
    with pytest.raises(error) as caught:
        backend_for(anthropic_server).stream(ChatRequest(messages=MESSAGES, model=MODEL))
    assert caught.value.status_code == status and caught.value.retry_after == retry_after
    assert caught.value.request_id and KEY not in str(caught.value)
    assert caught.value.retryable is (status != 401)


def test_an_overloaded_event_mid_stream_keeps_the_partial_reply(anthropic_server: AnthropicServer) -> None:
    anthropic_server.fail_mid_stream(after=2)
    stream = backend_for(anthropic_server).stream(ChatRequest(messages=MESSAGES, model=MODEL))
    with pytest.raises(Overloaded) as caught:
        list(stream)
    assert caught.value.partial_text == stream.text and stream.text.startswith("You said:")


def test_a_bad_key_from_the_server(anthropic_server: AnthropicServer) -> None:
    anthropic_server.api_key = "sk-ant-the-right-one"
    with pytest.raises(AuthenticationFailed) as caught:
        backend_for(anthropic_server).stream(ChatRequest(messages=MESSAGES, model=MODEL))
    assert KEY not in str(caught.value)


def test_the_provider_registry_serves_anthropic_keys_and_host(anthropic_server: AnthropicServer) -> None:
    assert isinstance(Connection(api_key=KEY, base_url=anthropic_server.base_url).backend(), AnthropicBackend)
    assert isinstance(
        Connection(api_key="anything", base_url="https://api.anthropic.com").backend(), AnthropicBackend
    )
    assert isinstance(
        Connection(api_key="sk-openai", base_url="http://127.0.0.1:1/v1").backend(), OpenAIBackend
    )


def test_a_typed_base_url_on_a_public_deployment_reaches_only_public_addresses(anthropic_server) -> None:
    connection = Connection(
        api_key=KEY, base_url=anthropic_server.base_url, base_url_typed=True, public_addresses_only=True
    )
    backend = connection.backend()
    assert isinstance(backend, AnthropicBackend)
    with pytest.raises(BackendError):
        list(backend.stream(ChatRequest(messages=MESSAGES, model=MODEL)))
    assert anthropic_server.message_requests == []  # 127.0.0.1 was never connected to
