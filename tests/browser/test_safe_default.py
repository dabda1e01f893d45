"""With no ACCESS_MODE, only the person at this machine is trusted (issue 17, item 1); a reply
whose tab closed stops (item 7).

One real server with nothing set, one Chromium told to resolve `rebind.test` to 127.0.0.1 (as a
DNS-rebinding page in the local user's browser, or a proxy in front of the app, would reach it
under another name). Under `localhost` the visitor is the single user: a Base URL field, no
private link. Under `rebind.test` the same loopback connection is a stranger: a private link,
no Base URL field, and another workspace than the local user's.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import (
    CHAT_MESSAGE,
    CHROMIUM,
    CHROMIUM_ARGS,
    SIDEBAR,
    UI_TIMEOUT_MS,
    VIEWPORT,
    AppPage,
    StartStreamlit,
    StreamlitServer,
)
from tests.openai_server import Fault, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

pytestmark = pytest.mark.browser

REBIND_NAME = "rebind.test"


@pytest.fixture(scope="module")
def rebinding_browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1"],
    )
    yield chromium
    chromium.close()


def visit(browser: Browser, url: str, server: StreamlitServer) -> AppPage:
    """A new browser session at `url` (the server under the name the test chose)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = AppPage(context.new_page(), server)
    page.page.goto(url)
    return page.wait_loaded()


def test_only_a_visitor_at_this_machine_is_trusted(
    rebinding_browser: Browser, start_streamlit: StartStreamlit
) -> None:
    server = start_streamlit()  # no ACCESS_MODE: the default a public deployment gets
    local = visit(rebinding_browser, f"http://localhost:{server.port}/", server)
    sidebar = local.page.locator(SIDEBAR)
    local.open_settings()
    assert sidebar.get_by_label("Base URL", exact=True).count() == 1  # reach your own llama.cpp
    assert "w=" not in local.page.url
    local.send("the local user's question")

    stranger = visit(rebinding_browser, f"http://{REBIND_NAME}:{server.port}/", server)
    stranger.wait_until("() => location.search.includes('w=')", "a private link for the stranger")
    stranger.wait_idle()
    text = stranger.body_text()
    assert "Bookmark this page's link" in text
    # No typed base URL: with nothing allowed the field is only a note.
    stranger.open_settings()
    assert stranger.page.locator(SIDEBAR).get_by_role("textbox", name="Base URL").count() == 0
    assert "the local user's question" not in text  # not the local user's workspace
    stranger.send("a stranger's question")
    local.page.reload()
    local.wait_loaded()
    assert "a stranger's question" not in local.body_text()


def test_an_explicit_single_user_setting_warns_a_remote_visitor(
    rebinding_browser: Browser, start_streamlit: StartStreamlit
) -> None:
    server = start_streamlit({"ACCESS_MODE": "single-user"})
    stranger = visit(rebinding_browser, f"http://{REBIND_NAME}:{server.port}/", server)
    assert "Everyone with this page's link sees these conversations" in stranger.body_text()
    stranger.screenshot("shared-with-strangers", top=True)
    local = visit(rebinding_browser, f"http://127.0.0.1:{server.port}/", server)
    assert "Everyone with this page's link" not in local.body_text()


def test_a_reply_whose_tab_closed_is_cancelled_within_seconds(
    rebinding_browser: Browser, start_streamlit: StartStreamlit
) -> None:
    """Reported: a reply streaming when its tab closed ran on for 117 s (until its time limit).
    Streamlit stops a closed tab's run; the service then ends the call and saves what arrived."""
    with running_server() as model_server:
        model_server.chunk_delay = 0.05
        model_server.enqueue(Fault(reply="word " * 1200))  # about a minute of streaming
        server = start_streamlit(
            {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model_server.base_url, "OPENAI_MAX_RETRIES": "0"}
        )
        app = visit(rebinding_browser, f"http://127.0.0.1:{server.port}/", server)
        app.submit("a long answer please")
        app.wait_until(
            f"() => [...document.querySelectorAll('{CHAT_MESSAGE}')]"
            ".some(m => m.innerText.includes('word word'))",
            "the reply is streaming",
            timeout_ms=60_000,
        )
        assert model_server.disconnects == 0
        app.page.context.close()
        closed_at = time.monotonic()
        while model_server.disconnects == 0 and time.monotonic() - closed_at < 30:
            time.sleep(0.2)
        assert model_server.disconnects == 1
        assert time.monotonic() - closed_at <= 10


def test_after_kill_9_mid_reply_the_message_is_there_to_retry(
    rebinding_browser: Browser, start_streamlit: StartStreamlit, tmp_path: Path
) -> None:
    """Reported: kill -9 while a reply streamed lost the typed message. It is saved before the
    model is called, and the link names its conversation, so a reload offers it again."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    with running_server() as model_server:
        model_server.chunk_delay = 0.05
        model_server.enqueue(Fault(reply="word " * 1200))
        env = {
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": model_server.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "DATABASE_URL": database,
        }
        first = start_streamlit(env)
        app = visit(rebinding_browser, f"http://127.0.0.1:{first.port}/", first)
        app.submit("the question that must survive")
        app.wait_until(
            f"() => [...document.querySelectorAll('{CHAT_MESSAGE}')]"
            ".some(m => m.innerText.includes('word word'))",
            "the reply is streaming",
            timeout_ms=60_000,
        )
        query = urlsplit(app.page.url).query
        assert "c=" in query
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        second = start_streamlit(env)
        again = visit(rebinding_browser, f"http://127.0.0.1:{second.port}/?{query}", second)
        assert "the question that must survive" in "\n".join(again.messages())
        assert again.page.get_by_role("button", name="Retry").count() == 1
