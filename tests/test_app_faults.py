"""Faults from the model server, seen through the page: the real SDK, over HTTP, against the
local OpenAI-compatible server. Each fault must give a clear error in the chat (never the key,
never a traceback), keep the user's message, keep the conversation well-formed, keep a partial
reply marked as interrupted, and let the next message through once the fault is gone."""

import itertools

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import conversation, page_text, send, session
from tests.conftest import APP_PATH
from tests.openai_server import Fault, OpenAIServer, unused_port

KEY = "sk-SECRET-fault-test-0123456789abcdef"


@pytest.fixture
def connect(start_app):
    def start(base_url: str, *, retries: int = 0, timeout_s: float = 2.0) -> AppTest:
        at = start_app(
            OPENAI_BASE_URL=base_url,
            OPENAI_API_KEY=KEY,
            OPENAI_MAX_RETRIES=str(retries),
            OPENAI_TIMEOUT_S=str(timeout_s),
        )
        assert not at.exception
        return at

    return start


def sent_roles(server: OpenAIServer) -> list[list[str]]:
    return [[m["role"] for m in r.messages] for r in server.chat_requests]


FAULTS = {
    "401 bad key": (lambda s: s.fail(401, f"Incorrect API key provided: {KEY}."), "rejected the API key"),
    "403": (lambda s: s.fail(403, "You are not allowed to sample from this model"), "HTTP 403"),
    "404 unknown model": (lambda s: s.fail(404, "The model does not exist"), "does not know model"),
    "429 with Retry-After": (
        lambda s: s.fail(429, "Rate limit reached", headers={"Retry-After": "7"}),
        "Try again in 7 s",
    ),
    "429 without Retry-After": (lambda s: s.fail(429, "Rate limit reached"), "Wait a little and try again"),
    "500": (lambda s: s.fail(500, "Internal error"), "HTTP 500"),
    "503": (lambda s: s.fail(503, "Overloaded"), "HTTP 503"),
    "timeout": (lambda s: s.delay(4), "did not answer within 2 s"),
    "body not JSON": (lambda s: s.send_raw("<html>bad gateway</html>"), "not an event stream"),
    "bad chunk": (lambda s: s.send_bad_chunk(after_chunks=0), "not OpenAI-compatible"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_reported_and_the_next_message_works(connect, openai_server, fault):
    script, expected = FAULTS[fault]
    at = connect(openai_server.base_url)
    send(at, "first question")
    script(openai_server)
    send(at, "second question")
    chat = conversation(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and expected in errors[0], errors
    assert KEY not in page_text(at)
    assert not at.exception
    # The user's message is kept, shown, and pending; no half-recorded turn.
    assert chat.pending_user_message.content == "second question"
    assert "second question" in [m.value for m in at.markdown]
    assert len(chat.turns) == 1
    assert "Retry" in [b.label for b in at.button]
    # Once the fault is gone the next message goes through, and nothing sent ever had two
    # user messages in a row.
    send(at, "third question")
    assert not at.error
    assert chat.messages[-1].content == "You said: third question"
    assert [m.state for m in chat.messages if m.content == "second question"] == ["unanswered"]
    for roles in sent_roles(openai_server):
        assert all(not (a == b == "user") for a, b in itertools.pairwise(roles)), roles


def test_retry_sends_the_same_message_again(connect, openai_server):
    at = connect(openai_server.base_url)
    openai_server.fail(500, "Internal error")
    send(at, "please answer")
    assert at.error
    at.button(key="retry").click().run()
    chat = conversation(at)
    assert not at.error
    assert [m.content for m in chat.messages[1:]] == ["please answer", "You said: please answer"]
    assert len(chat.turns) == 1


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_cut_stream_keeps_the_partial_reply_marked_interrupted(connect, openai_server, framing):
    at = connect(openai_server.base_url)
    openai_server.enqueue(
        Fault(reply="one two three four five six seven eight nine ten", cut_after=3, framing=framing)
    )
    send(at, "tell me a story")
    chat = conversation(at)
    partial = chat.messages[-1]
    assert partial.role == "assistant" and partial.interrupted
    assert partial.content and "ten" not in partial.content
    assert chat.turns[-1].interrupted and chat.turns[-1].reported_prompt_tokens is None
    assert ":orange-badge[interrupted · partial reply]" in [m.value for m in at.markdown]
    assert any("characters received are kept" in e.value for e in at.error)
    send(at, "next")
    assert chat.messages[-1].content == "You said: next" and not at.error


def test_stream_without_usage_records_no_reported_figures(connect, openai_server):
    at = connect(openai_server.base_url)
    openai_server.omit_usage()
    send(at, "hello")
    turn = conversation(at).turns[0]
    assert turn.reported_prompt_tokens is None and turn.usage_source is None
    assert turn.counted_prompt_tokens > 0
    assert not at.error


def test_counted_equals_reported_over_the_real_sdk(connect, openai_server):
    at = connect(openai_server.base_url)
    for text in ("北京烤鸭怎么吃？", "<|endoftext|> and emoji 🍜", "שלום مرحبا"):
        send(at, text)
    turns = conversation(at).turns
    assert [t.reported_prompt_tokens for t in turns] == [t.counted_prompt_tokens for t in turns]
    assert any("equal the reported ones" in c.value for c in at.caption)
    request = openai_server.chat_requests[-1]
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_connection_refused(connect):
    at = connect(f"http://127.0.0.1:{unused_port()}/v1")
    send(at, "anyone there?")
    assert any("Could not connect" in e.value for e in at.error)
    assert conversation(at).pending_user_message.content == "anyone there?"


def test_sdk_retries_a_503_transparently(connect, openai_server):
    at = connect(openai_server.base_url, retries=2)
    openai_server.fail(503, "Overloaded")
    send(at, "hello")
    assert not at.error
    assert len(openai_server.chat_requests) == 2
    assert conversation(at).messages[-1].content == "You said: hello"


def test_error_data_is_shown_with_the_error(connect, openai_server):
    at = connect(openai_server.base_url)
    openai_server.fail(429, "Rate limit reached", headers={"Retry-After": "7", "x-request-id": "req_abc123"})
    send(at, "hello")
    error = session(at).error
    assert (error.status_code, error.retry_after, error.request_id, error.retryable) == (
        429,
        7.0,
        "req_abc123",
        True,
    )
    assert "HTTP 429 · wait 7 s · request id `req_abc123`" in [c.value for c in at.caption]


def test_a_bad_key_says_retrying_will_not_help(connect, openai_server):
    at = connect(openai_server.base_url)
    openai_server.fail(401, "Incorrect API key provided.")
    send(at, "hello")
    assert any(c.value == "HTTP 401 · retrying will not help until this is fixed" for c in at.caption)


def test_a_server_rejecting_stream_options_costs_one_request_from_the_second_turn_on(connect, openai_server):
    openai_server.rejects_stream_options = True
    at = connect(openai_server.base_url)
    send(at, "first")
    # The first turn learns it: refused with stream_options, then sent again without.
    assert len(openai_server.chat_requests) == 2
    for text in ("second", "third"):
        before = len(openai_server.chat_requests)
        send(at, text)
        assert len(openai_server.chat_requests) == before + 1
        assert conversation(at).messages[-1].content == f"You said: {text}"
    assert all("stream_options" not in r.body for r in openai_server.chat_requests[1:])


def test_the_connection_status_never_says_connected_beside_a_failure(connect):
    at = connect(f"http://127.0.0.1:{unused_port()}/v1")
    assert any("Connected to" in s.value for s in at.sidebar.success)
    send(at, "anyone there?")
    assert any("Could not connect" in e.value or "could not reach" in e.value.lower() for e in at.error)
    assert not at.sidebar.success
    assert any("The last call to" in w.value for w in at.sidebar.warning)


def test_a_model_servers_error_is_shown_in_the_pages_language(clean_env, openai_server):
    """Under ?lang=zh-CN a failed call reads in Chinese, from the error's code and fields; only
    what the server itself said is quoted as it said it."""
    for name, value in {"OPENAI_BASE_URL": openai_server.base_url, "OPENAI_API_KEY": KEY}.items():
        clean_env.setenv(name, value)
    clean_env.setenv("OPENAI_MAX_RETRIES", "0")
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.query_params["lang"] = "zh-CN"
    at.run()
    openai_server.fail(429, "Rate limit reached", headers={"Retry-After": "7"})
    send(at, "第一个问题")
    [error] = [e.value for e in at.error]
    assert "正在限制模型" in error and "请在 7 秒后重试" in error
    assert "服务器回复：Rate limit reached" in error
    assert KEY not in error
    openai_server.fail(401, "Incorrect API key provided")
    at.button(key="retry").click().run()
    [error] = [e.value for e in at.error]
    assert "拒绝了该 API 密钥" in error and "rejected" not in error
