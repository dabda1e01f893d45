"""Nothing lost when the server is killed mid-reply (issue 17, item 7): a real `streamlit run`
streams a slow reply (or a comparison's columns) from the local OpenAI-compatible server to
Chromium, gets `kill -9`, and a new server on the same database shows the reloaded page the
question and the reply so far, marked interrupted, with Regenerate and Continue (a column's
Retry)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import (
    CHAT_INPUT,
    CHAT_MESSAGE,
    MAIN,
    AppPage,
    OpenApp,
    StartStreamlit,
    StreamlitServer,
)
from tests.openai_server import OpenAIServer, running_server

pytestmark = pytest.mark.browser


def kill_and_reload(app: AppPage, start_second: Callable[[], StreamlitServer], address: str) -> AppPage:
    """`kill -9` the server `app` is on, start another, and load `address` (the link) from it."""
    first = app.server.process
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    second = start_second()
    app.page.goto(f"{second.url}{address}")
    return AppPage(app.page, second)


def crash_env(model: OpenAIServer, folder: Path) -> dict[str, str]:
    """The environment of both servers: the slow model, and one database they share."""
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "sk-test-crash",
        "DATABASE_URL": f"sqlite:///{folder / 'shared.db'}",
    }


def test_kill_9_mid_reply_then_a_reload_shows_the_question_and_the_reply_so_far(
    start_streamlit: StartStreamlit, open_app: OpenApp, tmp_path
) -> None:
    words = [f"word{i}" for i in range(80)]
    long_reply = "A long story: " + " ".join(words) + "."
    with running_server() as model:
        model.chunk_delay = 0.1  # about 8 s in all
        env = crash_env(model, tmp_path)
        app = open_app(start_streamlit(env))
        model.reply(long_reply)
        app.submit("Tell me a very long story.")
        # 3.5 s of reply: the page shows it, and a draft was saved at 2 s.
        app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="word34").wait_for()
        link = parse_qs(urlsplit(app.page.url).query)
        reloaded = kill_and_reload(app, lambda: start_streamlit(env), f"?c={link['c'][0]}")
        reloaded.wait_loaded()
        question = reloaded.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(
            has_text="Tell me a very long story."
        )
        assert question.count() == 1
        reply = reloaded.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="interrupted · partial reply")
        assert reply.count() == 1
        shown = reply.inner_text()
        assert "A long story: word0" in shown and "word15" in shown and "word79" not in shown
        buttons = reloaded.page.locator(MAIN).get_by_role("button")
        assert buttons.filter(has_text="Regenerate last answer").count() == 1
        assert buttons.filter(has_text="Continue the reply").count() == 1
        reloaded.screenshot("crash-reloaded")
        # Continuing asks the model to go on from the reply that was kept.
        model.chunk_delay = 0.0
        buttons.filter(has_text="Continue the reply").click()
        reloaded.wait_idle()
        reloaded.assert_no_exception()
        sent = model.chat_requests[-1].body["messages"]
        assert [m["role"] for m in sent][-3:] == ["user", "assistant", "user"]
        assert sent[-2]["content"].startswith("A long story: word0") and "interrupted" in sent[-1]["content"]


def test_kill_9_mid_compare_then_a_reload_shows_the_question_and_each_columns_answer_so_far(
    start_streamlit: StartStreamlit, open_app: OpenApp, tmp_path
) -> None:
    question = "Repeat after me: " + " ".join(f"word{i}" for i in range(80))
    with running_server() as model:
        model.chunk_delay = 0.1  # every column echoes the question: about 8 s each
        env = crash_env(model, tmp_path)
        app = open_app(start_streamlit(env))
        app.show_view("Compare")
        app.page.locator(MAIN).get_by_role("button", name="Start comparing", exact=True).click()
        app.wait_idle()
        box = app.page.locator(CHAT_INPUT)
        box.fill(question)
        box.press("Enter")
        # 3.5 s of answers in all three columns (each quotes the question after it): the page
        # shows them, and a draft was saved at 2 s.
        app.wait_until(
            f"() => document.querySelector('{MAIN}').innerText.split('word34').length > 6",
            "three answers at word34",
        )
        link = urlsplit(app.page.url)
        assert "cmp" in parse_qs(link.query), link  # in the link from the question on
        reloaded = kill_and_reload(app, lambda: start_streamlit(env), f"{link.path.lstrip('/')}?{link.query}")
        app.page.locator(CHAT_INPUT).wait_for(state="visible")
        try:
            reloaded.wait_until(
                f"() => document.querySelector('{MAIN}').innerText.includes('interrupted')", "reopened"
            )
        finally:
            reloaded.screenshot("compare-crash-reloaded")
        reloaded.wait_idle()
        reloaded.assert_no_exception()
        main = reloaded.page.locator(MAIN)
        asked = main.locator(CHAT_MESSAGE).filter(has_text="Repeat after me: word0")
        answers = main.locator(CHAT_MESSAGE).filter(has_text="You said: Repeat after me: word0")
        assert asked.count() == 6 and answers.count() == 3  # the echo quotes the question too
        for index in range(3):
            shown = answers.nth(index).inner_text()
            assert "word15" in shown and "word79" not in shown, shown
        assert main.get_by_text("interrupted · partial answer").count() == 3
        retry = main.get_by_role("button", name="Retry", exact=True)
        assert retry.count() == 3
        # Retry asks one column again; the others keep their partial answers.
        model.chunk_delay = 0.0
        retry.first.click()
        deadline = time.monotonic() + 30
        while main.inner_text().count("word79") < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
        reloaded.wait_idle()
        reloaded.assert_no_exception()
        assert main.inner_text().count("word79") == 4  # the question in every column, one whole answer
        assert main.get_by_text("interrupted · partial answer").count() == 2
