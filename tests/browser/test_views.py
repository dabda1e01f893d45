"""The persona gallery and editor, the Chinese interface, dark mode and a phone, in Chromium.

Screenshots land in artifacts/; UPDATE_SCREENSHOT=1 also copies them into docs/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator

from tests.browser.conftest import (
    CHAT_INPUT,
    MAIN,
    REPO_ROOT,
    SIDEBAR,
    UI_TIMEOUT_MS,
    AppPage,
    OpenApp,
    StreamlitServer,
    copy_artifact,
)

pytestmark = pytest.mark.browser


def keep(path: Path, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        copy_artifact(path, REPO_ROOT / "docs" / name)


def card(app: AppPage, name: str) -> Locator:
    """The gallery card of the persona called `name` (the innermost block holding its heading)."""
    heading = app.page.locator("h4", has_text=name)
    return app.page.locator(f'{MAIN} [data-testid="stVerticalBlock"]').filter(has=heading).last


def test_gallery_editor_round_trip(
    offline_server: StreamlitServer, open_app: OpenApp, tmp_path: Path
) -> None:
    app = open_app(offline_server)
    app.show_view("Personas")
    cards = app.page.locator(f"{MAIN} h4")
    assert cards.count() >= 6
    keep(app.screenshot("views-01-gallery"), "gallery.png")

    # Duplicate the foodie into a persona of one's own, with its own system prompt.
    app.page.locator(MAIN).get_by_role("button", name="Duplicate").first.click()
    app.wait_idle()
    form = app.page.locator('[data-testid="stForm"]')
    form.get_by_label("Id (letters, digits, _ and -)").fill("hotpot")
    form.get_by_label("Name").fill("火锅专家")
    form.get_by_label("System prompt (sent first, every call)").fill("你只谈火锅。")
    keep(app.screenshot("views-02-editor"), "editor.png")
    form.get_by_role("button", name="Save").click()
    app.wait_idle()
    assert "Saved 🍜 火锅专家" in app.body_text()

    # Chat with it: the offline model saw its system prompt (2 messages: system and question).
    card(app, "火锅专家").get_by_role("button", name="Chat").click()
    app.wait_idle()
    app.page.locator(CHAT_INPUT).wait_for(state="visible")
    reply = app.send("鸳鸯锅怎么选？")
    assert "I received 2 messages" in reply

    # Export it as YAML and import it again under another name.
    app.show_view("Personas")
    with app.page.expect_download() as download:
        card(app, "火锅专家").get_by_role("button", name="Export").click()
        app.page.get_by_role("button", name="Persona YAML (this app)").click()
    exported = tmp_path / "hotpot-copy.yaml"
    download.value.save_as(exported)
    text = exported.read_text(encoding="utf-8")
    assert "你只谈火锅。" in text and "name: 火锅专家" in text
    app.page.locator(MAIN).get_by_text("Import from other apps").click()
    app.page.locator(MAIN).locator('input[type="file"]').first.set_input_files(str(exported))
    app.wait_until("() => document.body.innerText.includes('Save the ticked personas')", "the preview")
    app.page.locator(MAIN).get_by_role("button", name="Save the ticked personas").click()
    app.wait_until("() => document.body.innerText.includes('Saved 🍜 火锅专家')", "the import")
    app.wait_idle()
    assert app.page.locator(MAIN).get_by_role("button", name="Edit").count() == 2


def test_the_chinese_interface(offline_server: StreamlitServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    try:
        app = AppPage(context.new_page(), offline_server)
        app.open()
        sidebar = app.page.locator(SIDEBAR).inner_text()
        assert "角色" in sidebar and "Connection" not in sidebar and "Persona" not in sidebar
        assert app.page.evaluate("document.documentElement.lang") == "zh-CN"
        app.send("北京烤鸭怎么吃？", "[离线模型]")  # the offline model answers in the page's language
        keep(app.screenshot("views-03-chinese"), "chinese.png")
    finally:
        context.close()


def test_dark_mode_and_a_phone(offline_server: StreamlitServer, browser: Browser) -> None:
    dark = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        app = AppPage(dark.new_page(), offline_server)
        app.open()
        app.send("北京烤鸭怎么吃？")
        background = app.page.evaluate(
            "getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor"
        )
        channels = [int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]]
        assert max(channels) < 80, background  # a dark page, not the light one
        keep(app.screenshot("views-04-dark"), "dark.png")

        small = AppPage(phone.new_page(), offline_server)
        small.page.set_default_timeout(UI_TIMEOUT_MS)
        small.open()
        # The page opens at the top: the title and the chat come first, not the dashboard.
        assert small.page.locator(MAIN).evaluate("(main) => main.scrollTop") == 0
        title_y = small.page.locator("h1").first.bounding_box()["y"]
        chat_y = small.page.locator(CHAT_INPUT).bounding_box()["y"]
        dashboard_y = small.page.get_by_text("What the model sees").bounding_box()["y"]
        assert title_y < chat_y < dashboard_y
        keep(small.screenshot("views-05-phone"), "phone.png")
    finally:
        dark.close()
        phone.close()


def test_the_first_screen_shows_the_chat_input(offline_server: StreamlitServer, browser: Browser) -> None:
    """A new conversation: the chat input is on screen without scrolling, on a 1400×1000 desktop
    and on a 390×844 phone."""
    sizes = {
        "desktop": {"viewport": {"width": 1400, "height": 1000}},
        "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    }
    bottoms = {}
    for name, options in sizes.items():
        context = browser.new_context(**options)
        try:
            app = AppPage(context.new_page(), offline_server)
            app.page.set_default_timeout(UI_TIMEOUT_MS)
            app.open()
            box = app.page.locator(CHAT_INPUT).bounding_box()
            assert box is not None
            bottoms[name] = box["y"] + box["height"]
        finally:
            context.close()
    assert bottoms["desktop"] <= 1000 and bottoms["phone"] <= 844, bottoms


def test_a_draft_survives_a_view_switch(offline_server: StreamlitServer, open_app: OpenApp) -> None:
    """Text typed in the chat input and not sent is there again after another view; once sent,
    it is not offered again."""
    app = open_app(offline_server)
    box = app.page.locator(CHAT_INPUT)
    box.fill("一个还没发出的问题：")
    app.show_view("Personas")
    assert app.page.locator(CHAT_INPUT).count() == 0
    app.show_view("Chat")
    app.wait_until(
        f"() => document.querySelector('{CHAT_INPUT}')?.value === '一个还没发出的问题：'",
        "the draft back in the chat input",
    )
    box.fill("一个还没发出的问题：火锅")
    box.press("Enter")
    app.wait_reply(1, "[Offline model]")
    assert "一个还没发出的问题：火锅" in app.messages()[-2]
    app.show_view("Compare")
    app.show_view("Chat")
    app.page.locator(CHAT_INPUT).wait_for(state="visible")
    time.sleep(1)  # time enough for a draft to be put back
    assert app.page.locator(CHAT_INPUT).input_value() == ""


def test_the_conversation_search_finds_and_opens_a_conversation(
    offline_server: StreamlitServer, open_app: OpenApp
) -> None:
    """The search behind its expander in the sidebar lists the conversations that match what is
    typed (the list redraws alone), and picking one opens it."""
    app = open_app(offline_server)
    app.send("第一个问题：担担面怎么做？")
    app.open_conversation("New conversation")
    app.wait_idle()
    app.send("第二个问题：哪里的火锅最辣？")
    listed = app.page.locator(f'{SIDEBAR} [data-testid="stRadio"] label')
    assert listed.filter(has_text="担担面").count() == 1 and listed.filter(has_text="火锅").count() == 1
    app.open_expander("Search conversations", area=SIDEBAR)
    search = app.page.locator(SIDEBAR).get_by_placeholder("Search titles and messages")
    search.fill("担担面")
    search.press("Enter")
    app.wait_until(
        "() => { const labels = [...document.querySelectorAll("
        '\'[data-testid="stSidebar"] [data-testid="stRadio"] label\')].map(l => l.textContent);'
        " return labels.some(t => t.includes('担担面')) && !labels.some(t => t.includes('火锅')); }",
        "the list narrowed to the conversation that matches",
    )
    app.open_conversation("担担面")
    app.wait_idle()
    app.assert_no_exception()
    assert any("第一个问题：担担面怎么做？" in message for message in app.messages())
    assert not any("火锅" in message for message in app.messages())


def test_the_language_switch_in_the_settings(offline_server: StreamlitServer, open_app: OpenApp) -> None:
    """The language is chosen in the sidebar's settings; switching redraws the page in it, and the
    settings stay open (their label, in the new language, is a new element)."""
    app = open_app(offline_server)
    app.open_settings()
    app.page.locator(SIDEBAR).get_by_role("combobox", name="🌐 Language").click()
    app.page.get_by_role("option").filter(has_text="简体中文").click()
    app.page.locator(SIDEBAR).get_by_role("combobox", name="🌐 语言").wait_for()
    app.wait_idle()
    app.assert_no_exception()
    assert "给 美食家 发消息" in (app.page.locator(CHAT_INPUT).get_attribute("placeholder") or "")
    assert app.page.evaluate("document.documentElement.lang") == "zh-CN"
    assert "lang=zh-CN" in app.page.url
    app.screenshot("views-06-settings-zh")
