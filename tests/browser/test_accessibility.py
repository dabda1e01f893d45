"""Accessibility in Chromium: text contrast (WCAG 2.2, 1.4.3) in the light and the dark theme,
how many Tab presses reach the chat input from page load, and help tooltips on a touch screen.

The conversation measured holds trimmed and summarized messages, the summary, captions, both
charts and a conversation list with the open conversation: it is made by the real session on the
offline model and brought in through the sidebar's import, as a visitor would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from core.chat.session import ChatSession
from core.personas.persona import load_personas
from core.providers.offline import OfflineBackend
from tests.browser.conftest import (
    CHAT_INPUT,
    MAIN,
    REPO_ROOT,
    SIDEBAR,
    UI_TIMEOUT_MS,
    VIEWPORT,
    AppPage,
    StreamlitServer,
)

pytestmark = pytest.mark.browser

#: WCAG 2.2 success criterion 1.4.3 (AA): text, and large text (24 px, or 18.66 px bold).
NORMAL_TEXT_RATIO = 4.5
LARGE_TEXT_RATIO = 3.0
#: At most this many Tab presses from page load to the chat input.
TABS_TO_CHAT_INPUT = 8

# Every visible text node under the given roots, with the contrast of its colour against what is
# painted behind it. What is painted is worked out as the browser composes it: from the page's
# white canvas down through each ancestor, its background colour laid over what is behind it and
# the whole group faded by its opacity; the text's colour (CSS `color`, or `fill` for SVG text, as
# in Vega's charts) is one more layer over its parent's. Icons drawn with an icon font (Material
# Symbols' ligatures) and text with no letter or digit (emoji) are not text to read; a disabled
# control's label is exempt (WCAG 1.4.3: "part of an inactive user interface component").
CONTRAST_JS = """(roots) => {
    const parse = (value) => {
        const m = value.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return [0, 0, 0, 0];
        const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
        return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
    };
    const over = (top, below) => {  // top (rgba) over an opaque colour
        const a = top[3];
        return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a));
    };
    const mix = (inner, behind, opacity) =>
        [0, 1, 2].map((i) => inner[i] * opacity + behind[i] * (1 - opacity));
    const luminance = (rgb) => {
        const [r, g, b] = rgb.map((v) => {
            const c = v / 255;
            return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
        const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
        return (hi + 0.05) / (lo + 0.05);
    };
    // The colour painted at the text, with or without the text's own layer. `shape`: the SVG
    // shape a chart's text is drawn on (a gauge part's number on its bar), a layer of its own.
    const painted = (chain, textColour, withText, shape) => {
        const render = (index, behind) => {
            if (index === chain.length) {
                const under = shape ? over(shape, behind) : behind;
                return withText ? over(textColour, under) : under;
            }
            const style = getComputedStyle(chain[index]);
            const local = over(parse(style.backgroundColor), behind);
            return mix(render(index + 1, local), behind, Number(style.opacity));
        };
        return render(0, [255, 255, 255]);
    };
    // The filled SVG shape under the middle of `box` that is painted last before the text (not a
    // group's background; Vega's marks take no pointer events, so found by their boxes).
    const shapeUnder = (element, box) => {
        const x = box.left + box.width / 2, y = box.top + box.height / 2;
        let found = null;
        for (const shape of element.ownerSVGElement.querySelectorAll('path, rect, circle')) {
            if (shape.classList.contains('background') || shape.closest('text')) continue;
            if (!(shape.compareDocumentPosition(element) & Node.DOCUMENT_POSITION_FOLLOWING)) continue;
            const r = shape.getBoundingClientRect();
            if (x < r.left || x > r.right || y < r.top || y > r.bottom) continue;
            const style = getComputedStyle(shape);
            if (style.fill === 'none') continue;
            const fill = parse(style.fill);
            fill[3] *= Number(style.fillOpacity) * Number(style.opacity);
            if (fill[3] > 0) found = fill;
        }
        return found;
    };
    const hex = (rgb) => '#' + rgb.map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
    const results = [];
    for (const selector of roots) {
        for (const root of document.querySelectorAll(selector)) {
            const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const text = node.textContent.trim();
                if (!/[\\p{L}\\p{N}]/u.test(text)) continue;
                const element = node.parentElement;
                if (element.closest('title')) continue;  // an SVG icon's name, not drawn
                // WCAG exempts an inactive control (a disabled button) from the ratio.
                if (element.closest('[disabled], [aria-disabled="true"]')) continue;
                if (!element.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
                const range = document.createRange();
                range.selectNodeContents(node);
                const box = range.getBoundingClientRect();
                if (box.width < 1 || box.height < 1) continue;
                const style = getComputedStyle(element);
                if (/Material/.test(style.fontFamily)) continue;
                const svg = element instanceof SVGElement;
                let colour = parse(svg ? style.fill : style.color);
                if (svg) colour[3] *= Number(style.fillOpacity);
                const chain = [];
                for (let e = element; e; e = e.parentElement) chain.unshift(e);
                const shape = svg ? shapeUnder(element, box) : null;
                const fg = painted(chain, colour, true, shape);
                const bg = painted(chain, colour, false, shape);
                const size = parseFloat(style.fontSize);
                const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
                const testid = element.closest('[data-testid]');
                results.push({
                    text: text.slice(0, 60),
                    ratio: Math.round(ratio(fg, bg) * 100) / 100,
                    required: large ? 3 : 4.5,
                    colour: hex(fg),
                    background: hex(bg),
                    where: (testid ? testid.getAttribute('data-testid') : '') + (svg ? ' svg' : '')
                        + (shape ? ' on a shape' : ''),
                });
            }
        }
    }
    return results;
}"""


def trimmed_and_summarized(folder: Path) -> Path:
    """An export of a foodie conversation on the offline model: five turns under a 300-token
    budget that drops the oldest (two exchanges trimmed), then three under a summary."""
    persona = load_personas(REPO_ROOT / "personas").personas["foodie"]
    session = ChatSession.start(persona, OfflineBackend())
    session.conversation.update_settings(context_budget=300)
    for turn in range(8):
        if turn == 5:
            session.conversation.update_settings(context_policy="summarize", context_budget=500)
        "".join(session.send(f"Question {turn}: how do I cook dish number {turn} well at home?"))
    states = {message.state.value for message in session.conversation.messages}
    assert {"trimmed", "summarized"} <= states, states
    path = folder / "trimmed-and-summarized.json"
    path.write_text(session.conversation.to_json(), encoding="utf-8")
    return path


def import_conversation(app: AppPage, path: Path) -> None:
    """Import an exported conversation through the sidebar (it opens as a new conversation)."""
    app.open_settings()
    app.page.locator(f'{SIDEBAR} input[type="file"]').set_input_files(str(path))
    app.wait_until(
        "() => document.body.innerText.includes('Question 7')", "the imported conversation", UI_TIMEOUT_MS
    )
    app.wait_idle()


def low_contrast(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((m for m in measured if m["ratio"] < m["required"]), key=lambda m: m["ratio"])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_has_enough_contrast(
    offline_server: StreamlitServer, browser: Browser, tmp_path: Path, scheme: str
) -> None:
    exported = trimmed_and_summarized(tmp_path)
    context = browser.new_context(viewport=VIEWPORT, color_scheme=scheme)  # type: ignore[arg-type]
    try:
        app = AppPage(context.new_page(), offline_server)
        app.page.set_default_timeout(UI_TIMEOUT_MS)
        app.open()
        # The first run's charts too: drawn before the browser has said which theme it shows.
        on_load = app.page.evaluate(CONTRAST_JS, [MAIN, SIDEBAR])
        import_conversation(app, exported)
        import_conversation(app, exported)  # two with one title: the list numbers them
        body = app.body_text()
        assert "trimmed" in body and "summarized" in body, body
        measured = app.page.evaluate(CONTRAST_JS, [MAIN, SIDEBAR])
        assert [m for m in measured if " svg" in m["where"]], "no chart text measured"
        # The gauge's parts are numbered on the bar, in ink readable on each part's colour.
        on_bar = {m["text"] for m in measured if m["where"].endswith("on a shape")}
        assert on_bar >= {"1", "2", "4", "5"}, on_bar
        assert len(measured) > 100, measured
        lowest = min(measured, key=lambda m: m["ratio"] / m["required"])
        print(f"\n{scheme}: {len(measured)} texts, the lowest: {lowest}")
        app.screenshot(f"a11y-contrast-{scheme}")
        for when, texts in (("on load", on_load), ("with the conversation", measured)):
            worst = low_contrast(texts)
            assert not worst, f"{when}, {len(worst)} of {len(texts)} under their ratio: {worst[:15]}"
    finally:
        context.close()


def tabs_to_chat_input(app: AppPage) -> list[str]:
    """Press Tab from the top of the freshly loaded page until the chat input has the focus (at
    most 60 times); what each press focused."""
    visited: list[str] = []
    for _ in range(60):
        app.page.keyboard.press("Tab")
        focused = app.page.evaluate(
            """(input) => {
                const e = document.activeElement;
                const testid = e.closest('[data-testid]');
                return {
                    input: e.matches(input),
                    what: e.tagName + ' ' + (e.getAttribute('aria-label') || e.innerText || '')
                        .slice(0, 40) + ' [' + (testid ? testid.getAttribute('data-testid') : '') + ']',
                };
            }""",
            CHAT_INPUT,
        )
        visited.append(focused["what"])
        if focused["input"]:
            return visited
    raise AssertionError(f"Tab never reached the chat input: {visited}")


def test_the_chat_input_is_at_most_ten_tabs_away(
    offline_server: StreamlitServer, browser: Browser, tmp_path: Path
) -> None:
    """From page load, for a new visitor and for one coming back to a conversation (its link
    reloaded) with others listed beside it."""
    exported = trimmed_and_summarized(tmp_path)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        app = AppPage(context.new_page(), offline_server)
        app.page.set_default_timeout(UI_TIMEOUT_MS)
        app.open()
        first_visit = tabs_to_chat_input(app)
        for _ in range(3):
            import_conversation(app, exported)
        app.page.reload()
        app.wait_loaded()
        coming_back = tabs_to_chat_input(app)
        print(f"\nnew visitor, {len(first_visit)} presses:", *first_visit, sep="\n  ")
        print(f"coming back, {len(coming_back)} presses:", *coming_back, sep="\n  ")
        assert len(first_visit) <= TABS_TO_CHAT_INPUT, first_visit
        assert len(coming_back) <= TABS_TO_CHAT_INPUT, coming_back
    finally:
        context.close()


def test_a_help_tooltip_closes_with_a_tap_elsewhere(
    offline_server: StreamlitServer, browser: Browser
) -> None:
    """On a phone, a help mark's tooltip (Streamlit's `help=`) opens with a tap and closes with a
    tap elsewhere (WCAG 1.4.13: content shown on hover or focus can be dismissed)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    tooltip = '[data-testid="stTooltipContent"]'
    try:
        app = AppPage(context.new_page(), offline_server)
        app.page.set_default_timeout(UI_TIMEOUT_MS)
        app.open()
        help_mark = app.page.locator(f'{MAIN} [data-testid="stMetric"] [data-testid="stTooltipHoverTarget"]')
        help_mark.filter(visible=True).first.tap()
        app.page.locator(tooltip).filter(visible=True).first.wait_for()
        app.page.locator("h1").first.tap()
        app.wait_until(
            f"() => ![...document.querySelectorAll('{tooltip}')].some((e) => e.checkVisibility())",
            "the tooltip closed by a tap elsewhere",
        )
    finally:
        context.close()
