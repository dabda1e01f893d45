"""Importing personas from other apps in Chromium: several files at once, the preview with each
report, a bad file failing alone, saving, and the imported picture drawn in the chat.

Screenshots land in artifacts/ (persona-import-*.png)."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.browser.conftest import MAIN, OpenApp, StreamlitServer

pytestmark = pytest.mark.browser


def card_png(path: Path) -> Path:
    out = io.BytesIO()
    Image.new("RGB", (200, 200), (200, 90, 40)).save(out, format="PNG")
    image = out.getvalue()
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Aria",
            "description": "{{char}} is a travelling bard who sings to {{user}}.",
            "personality": "cheerful",
            "first_mes": "Well met, {{user}}!",
            "mes_example": "<START>\n{{user}}: Sing!\n{{char}}: *tunes her lute*",
            "post_history_instructions": "Stay in character.",
            "tags": ["fantasy"],
        },
    }
    body = b"chara\0" + base64.b64encode(json.dumps(card).encode())
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    iend = image.rindex(b"IEND") - 4
    path.write_bytes(image[:iend] + chunk + image[iend:])
    return path


def test_import_several_files_preview_and_save(
    offline_server: StreamlitServer, open_app: OpenApp, tmp_path: Path
) -> None:
    app = open_app(offline_server)
    app.show_view("Personas")
    agent = {
        "meta": {"title": "Chef", "avatar": "🧑‍🍳", "description": "Cooks."},
        "config": {"systemRole": "You are a chef.", "openingQuestions": ["Pasta?"]},
    }
    (tmp_path / "chef.json").write_text(json.dumps(agent), encoding="utf-8")
    (tmp_path / "broken.json").write_text("{nope", encoding="utf-8")
    files = [str(card_png(tmp_path / "aria.png")), str(tmp_path / "chef.json"), str(tmp_path / "broken.json")]
    main = app.page.locator(MAIN)
    main.get_by_text("Import from other apps").click()
    main.get_by_label("Your name (character cards write it as a placeholder)").fill("Sam")
    main.get_by_label("Your name (character cards write it as a placeholder)").press("Enter")
    app.wait_idle()
    main.locator('input[type="file"]').first.set_input_files(files)
    for shown in ("Save the ticked personas", "System message:", "Save Chef as"):
        app.wait_until(f"() => document.body.innerText.includes('{shown}')", f"the preview's {shown!r}")
    app.wait_idle()
    app.assert_no_exception()
    text = app.body_text()
    assert "Not imported: broken.json" in text
    assert "From aria.png · character card V2 (PNG, 'chara' chunk)" in text
    main.get_by_text("Save Aria as “aria”").scroll_into_view_if_needed()
    app.screenshot("persona-import-01-preview")

    main.get_by_role("button", name="Save the ticked personas").click()
    app.wait_until("() => document.body.innerText.includes('Saved 🎭 Aria.')", "the save")
    app.wait_idle()
    assert "Saved 🧑‍🍳 Chef." in app.body_text()
    app.screenshot("persona-import-02-saved")

    # The card's picture is the persona's avatar in the chat, and its greeting names the user.
    main.locator(".st-key-chat--aria button").click()
    app.wait_idle()
    assert "Well met, Sam!" in app.body_text()
    avatar = app.page.locator('[data-testid="stChatMessage"] img').first
    avatar.wait_for(state="visible")
    assert "/media/" in (avatar.get_attribute("src") or "")
    app.screenshot("persona-import-03-chat")
