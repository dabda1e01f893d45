"""Many visitors on one server: each browser session sees only its own chat and settings.

Sync Playwright may not be used from several threads, so the sessions are interleaved from one
thread: every page is given its message first, then each reply is awaited in turn while the others
keep running in the browser.
"""

from __future__ import annotations

import secrets

import pytest

from tests.browser.conftest import ARTIFACTS, SIDEBAR, AppPage, OpenApp, StreamlitServer

pytestmark = pytest.mark.browser

SESSIONS = 10
TURNS = 2


def marker(session: str, turn: int) -> str:
    return f"msg-{session}-t{turn}-{secrets.token_hex(3)}"


def assert_only_own(app: AppPage, own: list[str], others: list[str]) -> None:
    text = app.body_text()
    for mark in own:
        assert mark in text, f"{mark} is missing from its own session"
    leaked = [mark for mark in others if mark in text]
    assert not leaked, f"another session's messages are shown: {leaked}"
    assert not app.chat_alerts(), app.chat_alerts()


def test_two_sessions_typing_at_once(offline_server: StreamlitServer, open_app: OpenApp):
    a, b = open_app(offline_server), open_app(offline_server)
    sent: dict[str, list[str]] = {"a": [], "b": []}
    for turn in (1, 2):
        marks = {"a": marker("a", turn), "b": marker("b", turn)}
        before = {"a": a.submit(f"我是A：{marks['a']}"), "b": b.submit(f"我是B：{marks['b']}")}
        a.wait_reply(before["a"], expect=marks["a"])
        b.wait_reply(before["b"], expect=marks["b"])
        sent["a"].append(marks["a"])
        sent["b"].append(marks["b"])
    assert_only_own(a, sent["a"], sent["b"])
    assert_only_own(b, sent["b"], sent["a"])
    assert len(a.messages()) == len(b.messages()) == 1 + 2 * 2


def test_ten_sessions_at_once(offline_server: StreamlitServer, open_app: OpenApp):
    server = offline_server
    if not server.sessions:
        # Warm the process (tokenizers, personas, caches) so the figure below is per session only.
        open_app(server).send("warm-up")
    rss_before = server.rss_kib()

    apps = [open_app(server, wait=False) for _ in range(SESSIONS)]  # all load at once
    for app in apps:
        app.wait_loaded()
    sent: list[list[str]] = [[] for _ in apps]
    for turn in range(1, TURNS + 1):
        marks = [marker(f"s{index}", turn) for index in range(SESSIONS)]
        befores = [app.submit(f"第{turn}轮 {mark}") for app, mark in zip(apps, marks, strict=True)]
        for app, before, mark in zip(apps, befores, marks, strict=True):
            app.wait_reply(before, expect=mark)
        for own, mark in zip(sent, marks, strict=True):
            own.append(mark)

    for index, app in enumerate(apps):
        others = [mark for other, marks in enumerate(sent) if other != index for mark in marks]
        assert_only_own(app, sent[index], others)
        assert len(app.messages()) == 1 + 2 * TURNS

    rss_after = server.rss_kib()  # every session still open
    per_session_mib = (rss_after - rss_before) / SESSIONS / 1024
    report = (
        f"memory per session: {per_session_mib:.1f} MiB\n"
        f"({SESSIONS} sessions x {TURNS} offline turns; streamlit VmRSS {rss_before / 1024:.1f} MiB "
        f"before, {rss_after / 1024:.1f} MiB after)\n"
    )
    print(report, end="")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "concurrency.txt").write_text(report)
    assert "Traceback" not in server.log(), server.log()


def test_typed_api_key_stays_in_its_session(offline_server: StreamlitServer, open_app: OpenApp):
    a, b = open_app(offline_server), open_app(offline_server)
    key = f"sk-session-a-{secrets.token_hex(12)}"
    a.set_sidebar_text("API key", key)
    a.page.locator(SIDEBAR).get_by_text("key typed here").wait_for()
    assert "Connected to api.openai.com (key typed here)." in a.page.locator(SIDEBAR).inner_text()

    # B reruns (a chat turn) after A's key was typed: still empty, still offline.
    b.send("我还是离线的吗？")
    b.open_settings()  # its fields are drawn only while open
    b_key_field = b.page.locator(SIDEBAR).get_by_label("API key", exact=True)
    assert b_key_field.input_value() == ""
    b_sidebar = b.page.locator(SIDEBAR).inner_text()
    assert "No API key set" in b_sidebar and "Connected to" not in b_sidebar
    assert key not in b.page.content()
    assert a.page.locator(SIDEBAR).get_by_label("API key", exact=True).input_value() == key
