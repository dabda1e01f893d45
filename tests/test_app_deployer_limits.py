"""A public deployment through the page: which servers a visitor may pick, and the deployer's
limits on its own key (models, budgets, message size, rate)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import click, conversation, open_key, open_settings, send, setting, show_page
from tests.conftest import StartApp
from tests.openai_server import Billing, OpenAIServer

KEY = "sk-deployer-0123456789abcdef"


@pytest.fixture
def deployed(start_app: StartApp, openai_server: OpenAIServer):
    """The page on the deployer's key and server, with these extra settings."""

    def start(**env: str) -> AppTest:
        at = start_app(
            OPENAI_API_KEY=KEY, OPENAI_BASE_URL=openai_server.base_url, OPENAI_MAX_RETRIES="0", **env
        )
        assert not at.exception, at.exception
        return at

    return start


def test_private_mode_without_an_allowlist_offers_no_base_url(start_app: StartApp) -> None:
    at = open_settings(start_app(ACCESS_MODE="private"))
    assert not [w for w in at.sidebar.text_input if w.key == "base_url"]
    assert any("does not let visitors choose another server" in c.value for c in at.sidebar.caption)


def test_private_mode_offers_only_the_allowed_base_urls(start_app: StartApp) -> None:
    at = start_app(
        ACCESS_MODE="private", ALLOWED_BASE_URLS="https://api.example.com/v1, https://llm.example.org/v1"
    )
    field = open_settings(at).selectbox(key="base_url")
    assert field.options == [
        "The deployment’s server",
        "https://api.example.com/v1",
        "https://llm.example.org/v1",
    ]


def test_single_user_mode_lets_any_base_url_be_typed(app: AppTest) -> None:
    assert open_settings(app).text_input(key="base_url") is not None


def test_allowed_models_make_the_model_a_choice(deployed) -> None:
    at = deployed(ALLOWED_MODELS="gpt-4o-mini, gpt-4.1-mini")
    model = open_settings(at).selectbox(key=f"model::{open_key(at)}")
    assert model.options == ["gpt-4o-mini", "gpt-4.1-mini"]


def test_caps_are_enforced_and_said(deployed, openai_server: OpenAIServer) -> None:
    at = deployed(MAX_REPLY_CAP="100", MAX_CONTEXT_BUDGET="800")
    assert setting(at, "reply_cap").value == 100 and setting(at, "budget").value == 800
    assert any("Limited by this deployment" in c.value for c in at.sidebar.caption)
    send(at, "hello")
    assert openai_server.chat_requests[-1].body["max_tokens"] == 100
    assert conversation(at).settings.context_budget == 800


def test_the_rate_limit_says_when_and_keeps_the_message(deployed, openai_server: OpenAIServer) -> None:
    at = deployed(RATE_LIMIT_REQUESTS_PER_MIN="1")
    send(at, "first")
    send(at, "second, too soon")
    assert len(openai_server.chat_requests) == 1
    assert any("Try again in" in e.value for e in at.error)
    assert conversation(at).pending_user_message.content == "second, too soon"
    assert "Retry" in [b.label for b in at.button]


def test_the_message_size_limit_reaches_the_chat_input(deployed) -> None:
    at = deployed(MAX_MESSAGE_CHARS="500")
    assert at.chat_input(key="chat_input").proto.max_chars == 500


def test_the_dashboard_says_how_tokens_are_counted(deployed, openai_server: OpenAIServer) -> None:
    openai_server.billing = Billing(tokenize="vllm", max_model_len=32_768)
    openai_server.models.append("qwen3")
    at = deployed()
    setting(at, "model").input("qwen3").run()
    send(at, "北京烤鸭怎么吃？")
    # The notes under the context gauge are one caption, a line each.
    lines = [line for c in at.caption for line in c.value.split("  \n")]
    assert "📏 Counted exactly, by the server's own tokenizer." in lines
    assert "The server reports a context window of 32,768 tokens." in lines
    turn = conversation(at).turns[-1]
    assert turn.counted_prompt_tokens == turn.reported_prompt_tokens


def test_the_compare_page_is_held_to_the_limits(deployed, openai_server: OpenAIServer) -> None:
    """The compare view used to ignore every limit (12 calls on o1-pro, 200,000-token replies)."""
    at = deployed(
        ACCESS_MODE="private",
        ALLOWED_MODELS="gpt-4o-mini",
        MAX_REPLY_CAP="100",
        MAX_CONTEXT_BUDGET="2048",
        MAX_MESSAGE_CHARS="200",
        RATE_LIMIT_REQUESTS_PER_MIN="3",
    )
    show_page(at, "compare")
    for index in range(3):  # the model is a choice of the allowed ones, the budget capped
        persona = at.selectbox(key=f"compare_persona::{index}").value
        assert at.selectbox(key=f"compare_model::{index}::{persona}").options == ["gpt-4o-mini"]
        assert at.number_input(key=f"compare_budget::{index}::{persona}").max == 2048
    click(at, "Start comparing")
    assert at.chat_input(key="compare_input").proto.max_chars == 200
    at.chat_input(key="compare_input").set_value("x" * 5_010).run()  # the input keeps 200
    # The columns stream on their own threads (the page does not wait for them): let them end.
    assert at.session_state.service.comparison.wait(30)
    at.run()
    at.chat_input(key="compare_input").set_value("again").run()  # three more requests: over the limit
    assert any("Try again in" in e.value for e in at.error)
    requests = openai_server.chat_requests
    assert len(requests) == 3
    for request in requests:
        assert request.body["model"] == "gpt-4o-mini" and request.body["max_tokens"] <= 100
        assert len(request.messages[-1]["content"]) <= 200
