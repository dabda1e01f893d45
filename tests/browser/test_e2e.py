"""The whole app in a real browser: persona picking, streamed offline replies, the dashboard,
trimming, HTML safety, and a chat with a real OpenAI-compatible server (including a fault)."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator

import pytest

from core.personas.persona import load_personas
from tests.browser.conftest import (
    ARTIFACTS,
    CHART,
    CHAT_MESSAGE,
    MAIN,
    REPO_ROOT,
    TABLE,
    AppPage,
    OpenApp,
    StreamlitServer,
    copy_artifact,
    streamlit_process,
)
from tests.openai_server import OpenAIServer, running_server

pytestmark = pytest.mark.browser

FOODIE = load_personas(REPO_ROOT / "personas").personas["foodie"]
TRIMMED_BADGE = "trimmed · no longer in the model's context"
# Long enough (≈60 tokens each, ≈190 per exchange with the offline reply) that the foodie's
# 1,024-token budget trims within a few turns.
DISHES = (
    "红烧肉",
    "宫保鸡丁",
    "麻婆豆腐",
    "小笼包",
    "北京烤鸭",
    "糖醋排骨",
    "鱼香肉丝",
    "酸菜鱼",
    "担担面",
    "白切鸡",
)
QUESTIONS = [
    f"第{n}个问题：{dish}应该怎么做才好吃？火候、调味和食材挑选各有什么讲究？请按步骤详细说明。"
    for n, dish in enumerate(DISHES, start=1)
]


def first_number(text: str) -> int:
    """'1,234 / 56' -> 1234."""
    match = re.search(r"\d[\d,]*", text)
    assert match, text
    return int(match.group().replace(",", ""))


# The "Tokens per turn" chart: the Vega-Lite chart with that title (Vega draws it as SVG text).
_FIND_USAGE_CHART = f"""
    const main = document.querySelector('{MAIN}');
    const titled = (element) => [...element.querySelectorAll('.role-title-text')]
        .some((title) => title.textContent.trim() === 'Tokens per turn');
    const chart = [...main.querySelectorAll('{CHART}')].find(titled);
"""
USAGE_CHART_DRAWN = f"""() => {{{_FIND_USAGE_CHART}
    return !!chart && !!chart.querySelector('svg .mark-symbol, svg .mark-line, canvas');
}}"""
# Vega labels every mark for screen readers: "turn: 1; tokens: 87; series: …".
USAGE_CHART_LABELS = f"""() => {{{_FIND_USAGE_CHART}
    return chart ? [...chart.querySelectorAll('[aria-label]')].map((e) => e.getAttribute('aria-label')) : [];
}}"""


def wait_usage_chart(app: AppPage) -> list[str]:
    """Wait for the chart to be drawn (Vega draws it a moment after Streamlit adds the element);
    returns the names of the series it plots."""
    app.wait_until(USAGE_CHART_DRAWN, "the Tokens per turn chart is drawn")
    labels = app.page.evaluate(USAGE_CHART_LABELS)
    return sorted({name for label in labels for name in re.findall(r"series: ([^;]+)", label)})


# --- the offline model ---------------------------------------------------------------------


def test_offline_chat_dashboard_and_trimming(offline_server: StreamlitServer, open_app: OpenApp):
    app = open_app(offline_server)
    page = app.page

    # The foodie persona comes first, with its greeting.
    assert page.locator("h1").inner_text().strip() == "🍜 美食家"
    assert app.persona() == "🍜 美食家"
    (greeting,) = app.messages()
    assert FOODIE.greeting in greeting
    assert "the chart fills in as you chat" in app.body_text()
    app.screenshot("e2e-01-start")

    # Another persona and back: each has its own title and greeting.
    app.select_persona("Code Reviewer")
    assert app.persona() == "🔍 Code Reviewer"
    assert "Paste a diff" in app.messages()[0]
    app.select_persona("美食家")
    assert app.persona() == "🍜 美食家"
    assert FOODIE.greeting in app.messages()[0]

    # Streamed offline replies; the usage chart and the metrics follow every turn.
    tokens: list[int] = []
    trimmed_at = None
    for turn, question in enumerate(QUESTIONS, start=1):
        reply = app.send(question)
        assert question[:20] in reply, reply  # the offline model quotes the message it got
        messages = app.messages()
        assert len(messages) == 1 + 2 * turn, messages
        assert question in messages[-2]
        assert not app.chat_alerts()
        series = wait_usage_chart(app)
        # The chart's point: prompt tokens per turn (against the budget).
        assert any("prompt" in name.lower() for name in series), f"no prompt-token series drawn: {series}"
        tokens.append(first_number(app.metric("Tokens")))
        if turn == 1:
            app.screenshot("e2e-02-first-turn")
            assert "[Offline model] I received 2 messages" in reply  # system prompt + question
            assert "the chart fills in as you chat" not in app.body_text()
        if TRIMMED_BADGE in app.body_text():
            trimmed_at = turn
            break
    assert trimmed_at is not None, f"nothing was trimmed after {len(QUESTIONS)} turns"
    assert trimmed_at >= 3
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens

    # The oldest exchange carries the badge, the newest does not; the log table appeared.
    messages = app.messages()
    assert TRIMMED_BADGE in messages[1] and TRIMMED_BADGE in messages[2]
    assert TRIMMED_BADGE not in messages[-1] and TRIMMED_BADGE not in messages[-2]
    body = app.body_text()
    assert "Nothing trimmed yet." not in body
    # The trimming log: a table of whole texts (the next-call table is in a closed expander).
    trimming_log = page.locator(f"{MAIN} {TABLE}").filter(visible=True)
    assert trimming_log.count() == 1, "the trimming log table is missing"
    assert QUESTIONS[0] in trimming_log.inner_text(), "the log should show what was dropped, whole"
    assert re.search(r"\d+ messages in context", body)
    # The offline model now receives fewer messages than the conversation holds (2 per turn).
    received = re.search(r"I received (\d+) messages", messages[-1])
    assert received and int(received.group(1)) < 2 * trimmed_at, messages[-1]

    app.screenshot("e2e-03-trimmed-full", full_page=True)
    # For the README: the top of the page, where the trimmed exchange and the chart show. Written
    # into docs/ only on request (UPDATE_SCREENSHOT=1), so a test run leaves the work tree alone.
    top = app.screenshot("e2e-04-trimmed-top", height=1100, top=True)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        copy_artifact(top, REPO_ROOT / "docs" / "screenshot.png")


def test_html_in_a_message_is_text(offline_server: StreamlitServer, open_app: OpenApp):
    app = open_app(offline_server)
    payload = '<img src=x onerror="window.__xss=1"><b>bold</b>'
    app.send(payload)
    time.sleep(0.5)  # an injected <img src=x> would have fired onerror by now
    assert app.page.evaluate("typeof window.__xss") == "undefined"
    messages = app.page.locator(f"{MAIN} {CHAT_MESSAGE}")
    assert messages.locator("img[src='x'], img[onerror]").count() == 0
    assert messages.locator("b", has_text="bold").count() == 0
    user_message = app.messages()[1]
    assert payload in user_message, user_message  # shown as the text that was typed
    app.screenshot("e2e-05-html-as-text")


# --- a real OpenAI-compatible server -------------------------------------------------------

E2E_KEY = f"sk-e2e-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def openai_server_module() -> Iterator[OpenAIServer]:
    with running_server() as server:
        server.api_key = E2E_KEY  # a request without this bearer key gets a 401
        yield server


@pytest.fixture(scope="module")
def connected_server(
    openai_server_module: OpenAIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamlitServer]:
    env = {"OPENAI_BASE_URL": openai_server_module.base_url, "OPENAI_API_KEY": E2E_KEY}
    with streamlit_process(tmp_path_factory.mktemp("streamlit-openai"), env) as server:
        yield server


@pytest.fixture
def openai_server(openai_server_module: OpenAIServer) -> OpenAIServer:
    openai_server_module.reset()
    openai_server_module.chunk_delay = 0.0
    return openai_server_module


def watch_last_message(app: AppPage) -> None:
    """Record every text the chat's newest message shows, as it changes (to see streaming)."""
    app.page.evaluate(
        f"""() => {{
            window.__seen = [];
            new MutationObserver(() => {{
                const all = document.querySelectorAll('{CHAT_MESSAGE}');
                const text = all.length ? all[all.length - 1].innerText : '';
                if (window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
            }}).observe(document.body, {{subtree: true, childList: true, characterData: true}});
        }}"""
    )


def test_chat_with_openai_compatible_server(
    connected_server: StreamlitServer, openai_server: OpenAIServer, open_app: OpenApp
):
    app = open_app(connected_server)
    host = f"127.0.0.1:{openai_server.port}"
    assert f"Connected to {host} (key from environment)." in app.body_text()

    words = [f"word{i}" for i in range(30)]
    streamed_reply = "Streaming works: " + " ".join(words) + "."
    openai_server.chunk_delay = 0.04
    openai_server.reply(streamed_reply)
    watch_last_message(app)
    question = "红烧肉怎样做才能肥而不腻？"
    reply = app.send(question, expect=streamed_reply)
    partial = [text for text in app.page.evaluate("window.__seen") if "Streaming works:" in text]
    partial = [text for text in partial if streamed_reply not in text]
    assert len(partial) >= 3, f"the reply did not arrive piece by piece: {partial}"
    assert "[Offline model]" not in reply

    # What the server received: a streaming request asking for usage, with exactly our messages.
    (request,) = openai_server.chat_requests
    assert request.headers["authorization"] == f"Bearer {E2E_KEY}"
    body = request.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == FOODIE.model
    assert body["max_tokens"] == FOODIE.max_reply_tokens
    assert body["temperature"] == FOODIE.sampling.temperature
    assert body["messages"] == [
        {"role": "system", "content": FOODIE.system_prompt},
        {"role": "user", "content": question},
    ]

    # A second turn carries the first exchange; the default reply echoes the message.
    openai_server.chunk_delay = 0.0
    second = "那东坡肉呢？"
    assert f"You said: {second}" in app.send(second, expect=f"You said: {second}")
    assert openai_server.chat_requests[-1].body["messages"] == [
        {"role": "system", "content": FOODIE.system_prompt},
        {"role": "user", "content": question},
        {"role": "assistant", "content": streamed_reply},
        {"role": "user", "content": second},
    ]

    body_text = app.body_text()
    assert "Counted prompt tokens equal the reported ones on every turn." in body_text
    assert "Counted and reported prompt tokens differ" not in body_text
    assert "Offline model" not in body_text
    wait_usage_chart(app)
    app.screenshot("e2e-06-openai-server", full_page=True)


def test_server_fault_shows_an_error_and_retry_recovers(
    connected_server: StreamlitServer, openai_server: OpenAIServer, open_app: OpenApp
):
    app = open_app(connected_server)
    # One 500 that the SDK is told not to retry, so exactly one request fails.
    openai_server.fail(
        500, "The kitchen is on fire.", type="server_error", headers={"x-should-retry": "false"}
    )
    question = "广式早茶有哪些经典点心？"
    before = app.submit(question)
    app.wait_reply(before, error=True)

    alerts = app.chat_alerts()
    assert len(alerts) == 1, alerts
    assert "HTTP 500" in alerts[0] and "The kitchen is on fire" in alerts[0], alerts[0]
    assert len(openai_server.chat_requests) == 1
    messages = app.messages()
    assert len(messages) == 2, messages  # the greeting and the question, no (empty) reply
    assert question in messages[1], messages  # the user's message is still shown
    assistant_replies = [text for text in messages[1:] if "You said" in text]
    assert not assistant_replies, messages
    # No assistant bubble holds the error: it is in the alert box only.
    assert not any("HTTP 500" in text for text in messages), messages
    retry = app.page.locator(MAIN).get_by_role("button", name="Retry")
    assert retry.is_visible()
    app.screenshot("e2e-07-fault")

    retry.click()
    app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text=f"You said: {question}").wait_for()
    app.wait_idle()
    assert not app.chat_alerts()
    messages = app.messages()
    assert len(messages) == 3, messages  # greeting, the question, its answer
    assert f"You said: {question}" in messages[-1]
    assert len(openai_server.chat_requests) == 2
    assert openai_server.chat_requests[-1].body["messages"][-1] == {"role": "user", "content": question}
    assert app.page.locator(MAIN).get_by_role("button", name="Retry").count() == 0
    app.screenshot("e2e-08-retried")
    assert ARTIFACTS.exists()


def test_stop_button_ends_a_long_reply_and_keeps_it(
    connected_server: StreamlitServer, openai_server: OpenAIServer, open_app: OpenApp
):
    app = open_app(connected_server)
    words = [f"word{i}" for i in range(60)]
    long_reply = "A long story: " + " ".join(words) + "."
    openai_server.chunk_delay = 0.15  # about 9 s in all
    openai_server.reply(long_reply)
    app.submit("Tell me a very long story.")
    app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="word5").wait_for()
    # While it streams, the question is shown once (the history already holds it).
    question = app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="Tell me a very long story.")
    assert question.count() == 1
    # While a reply streams, the chat input's send button is a stop button (submit_mode="stop").
    app.page.locator('[data-testid="stChatInputStopButton"]').click()
    app.wait_idle()
    app.assert_no_exception()

    # The next message goes through and carries the partial reply, marked interrupted.
    openai_server.chunk_delay = 0.0
    assert "You said: and then?" in app.send("and then?", expect="You said: and then?")
    sent = openai_server.chat_requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    partial = sent[2]["content"]
    assert partial.startswith("A long story: word0") and "word59" not in partial
    interrupted = app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="interrupted · partial reply")
    assert interrupted.count() == 1
    assert partial.split()[-1] in interrupted.inner_text()
