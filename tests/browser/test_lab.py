"""The context lab and the compare view in Chromium: a summarize conversation on the offline model
and on the local OpenAI-compatible server, its summary shown and edited; three columns streaming
at once against the local server, one of them failing alone, and the comparison after a reload."""

from __future__ import annotations

import json

import pytest

from core.chat.summaries import SUMMARY_FRAME
from tests.browser.conftest import (
    MAIN,
    SIDEBAR,
    AppPage,
    OpenApp,
    StartStreamlit,
    StreamlitServer,
)
from tests.openai_server import Fault, running_server

pytestmark = pytest.mark.browser

QUESTION = "第{n}个问题：四川火锅、重庆小面和成都担担面，哪一个最适合第一次去四川的人？"


def choose(app: AppPage, label: str, option: str) -> None:
    """Pick `option` in the sidebar selectbox labelled `label` (in the sidebar's settings)."""
    app.open_settings()
    box = app.page.locator(SIDEBAR).get_by_role("combobox", name=label)
    box.scroll_into_view_if_needed()
    box.click()
    box.fill(option)
    box.press("Enter")
    app.wait_idle()
    assert box.input_value() == option


def summarize_until_folded(app: AppPage, expect: str | None) -> None:
    choose(app, "When the budget is full", "Summarize the oldest exchanges")
    for n in range(1, 21):
        app.send(QUESTION.format(n=n), expect=expect)
        if app.page.get_by_text("Summary of", exact=False).count():
            return
    raise AssertionError("twenty long exchanges on a 1,024-token budget were never summarized")


def test_a_summarize_conversation_on_the_offline_model(
    offline_server: StreamlitServer, open_app: OpenApp
) -> None:
    app = open_app(offline_server)
    summarize_until_folded(app, "[Offline model]")
    assert "summarized · folded into the summary" in app.body_text()
    block = app.page.get_by_text("Summary of", exact=False).first
    block.click()
    app.wait_idle()
    editor = app.page.locator(MAIN).get_by_label("Edit the summary", exact=False)
    editor.fill("用户改写的摘要：他们在比较四川的小吃。")
    editor.press("Control+Enter")
    app.wait_idle()
    app.page.locator(MAIN).get_by_role("button", name="Save the summary").click()
    app.wait_idle()
    app.assert_no_exception()
    app.page.get_by_text("Summary of", exact=False).first.click()
    app.wait_idle()
    assert "edited by you" in app.body_text()
    assert "用户改写的摘要" in app.body_text()
    # The next call sends a summary in place of the folded exchanges (the offline model says so).
    reply = app.send("下一个问题", expect="[Offline model]")
    assert "a summary of the earlier conversation" in reply
    app.screenshot("lab-01-summary")


def test_a_pinned_message_is_pinned_in_the_browser(
    offline_server: StreamlitServer, open_app: OpenApp
) -> None:
    """Pins are chosen beside the table of what the next call sends (drawn only while its
    expander is open; the choices in their own fragment): the chat badges the pinned message, the
    table says it is sent pinned, and the expander stays open."""
    app = open_app(offline_server)
    app.send("第一个问题：担担面和小面有什么不同？")
    app.send("第二个问题：哪里的火锅最辣？")
    app.open_expander("Exactly what the next call sends")
    choices = app.page.locator(MAIN).get_by_role("combobox", name="Keep these in context")
    choices.click()
    choices.press_sequentially("第一")  # typing filters the choices, as a user finds a message
    app.page.get_by_role("option").filter(has_text="第一个问题").wait_for()
    choices.press("Enter")
    app.page.keyboard.press("Escape")
    app.wait_idle()
    app.assert_no_exception()
    app.wait_until(
        f"() => document.querySelector('{MAIN}').innerText.includes('sent, pinned')",
        "the next call's table says the message is sent pinned",
    )
    assert "📌 pinned" in app.body_text()  # the chat's badge
    app.screenshot("lab-00-pinned")


def test_a_summarize_conversation_against_the_local_server(
    start_streamlit: StartStreamlit, open_app: OpenApp
) -> None:
    with running_server() as model:
        server = start_streamlit(
            {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-lab-test", "OPENAI_MAX_RETRIES": "0"}
        )
        app = open_app(server)
        summarize_until_folded(app, "You said:")
        summaries = [r for r in model.chat_requests if "Summary" in json.dumps(r.body, ensure_ascii=False)]
        assert summaries, "the summarizer's call never reached the server"
        # No request ever went over the budget, and the summary travels as the second message.
        last = model.chat_requests[-1].messages
        assert last[1]["role"] == "user" and last[1]["content"].startswith(SUMMARY_FRAME)


def test_three_columns_at_once_one_failing_alone_and_after_a_reload(
    start_streamlit: StartStreamlit, open_app: OpenApp
) -> None:
    with running_server() as model:
        model.chunk_delay = 0.05
        server = start_streamlit(
            {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-lab-test", "OPENAI_MAX_RETRIES": "0"}
        )
        app = open_app(server)
        app.show_view("Compare")
        app.page.locator(MAIN).get_by_role("button", name="Start comparing").click()
        app.wait_idle()
        # One column's model fails: the server answers that model (the code reviewer's) with a 429.
        before = len(model.chat_requests)
        model.model_faults["gpt-4.1"] = Fault(
            status=429, error={"message": "Rate limit reached", "type": "requests", "code": None}
        )
        box = app.page.locator('[data-testid="stChatInputTextArea"]')
        box.fill("北京烤鸭怎么吃？")
        box.press("Enter")
        # While streaming, at least two columns show text at the same moment.
        app.wait_until(
            "() => document.querySelectorAll('[data-testid=\"stChatMessage\"]').length >= 4",
            "the columns start streaming",
        )
        # The columns redraw themselves until the last one ends (a fragment), then the page reruns.
        app.wait_until(
            "() => document.body.innerText.split('first token').length - 1 >= 2"
            " && document.body.innerText.includes('Which answer is better')",
            "every column ended",
        )
        app.wait_idle()
        app.assert_no_exception()
        assert len(model.chat_requests) - before == 3
        body = app.body_text()
        assert body.count("You said: 北京烤鸭怎么吃？") == 2
        assert "rate-limiting" in body  # the failing column's error, in that column only
        assert body.count("first token") == 2  # the failing column has none
        app.screenshot("lab-02-compare")
        # The comparison is saved and in the link: a reload returns to the compare view with it open.
        assert "/compare" in app.page.url and "cmp=" in app.page.url
        app.page.reload()
        app.wait_loaded()
        app.wait_idle()
        assert app.body_text().count("You said: 北京烤鸭怎么吃？") == 2
        # And from the list of saved comparisons.
        app.page.locator(MAIN).get_by_role("button", name="New comparison").click()
        app.wait_idle()
        app.page.locator(MAIN).get_by_text("1 saved comparison").click()  # the expander
        app.page.locator(MAIN).get_by_role("button", name="北京烤鸭怎么吃？", exact=False).first.click()
        app.wait_idle()
        assert app.body_text().count("You said: 北京烤鸭怎么吃？") == 2
