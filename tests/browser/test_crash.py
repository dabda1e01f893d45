"""Nothing lost when the server is killed mid-reply (issue 17, item 7): a real `streamlit run`
streams a slow reply from the local OpenAI-compatible server to Chromium, gets `kill -9`, and a
new server on the same database shows the reloaded page the question and the reply so far,
marked interrupted, with Regenerate and Continue."""

from __future__ import annotations

import signal
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import CHAT_MESSAGE, MAIN, AppPage, OpenApp, StartStreamlit
from tests.openai_server import running_server

pytestmark = pytest.mark.browser


def test_kill_9_mid_reply_then_a_reload_shows_the_question_and_the_reply_so_far(
    start_streamlit: StartStreamlit, open_app: OpenApp, tmp_path
) -> None:
    words = [f"word{i}" for i in range(80)]
    long_reply = "A long story: " + " ".join(words) + "."
    with running_server() as model:
        model.chunk_delay = 0.1  # about 8 s in all
        env = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "sk-test-crash",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",  # both servers' database
        }
        first = start_streamlit(env)
        app = open_app(first)
        model.reply(long_reply)
        app.submit("Tell me a very long story.")
        # 3.5 s of reply: the page shows it, and a draft was saved at 2 s.
        app.page.locator(f"{MAIN} {CHAT_MESSAGE}").filter(has_text="word34").wait_for()
        link = parse_qs(urlsplit(app.page.url).query)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        assert first.process.returncode == -signal.SIGKILL

        second = start_streamlit(env)
        reloaded = AppPage(app.page, second)
        app.page.goto(f"{second.url}?c={link['c'][0]}")
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
