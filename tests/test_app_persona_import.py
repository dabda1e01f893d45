"""The Personas view's import from other apps (several files, a preview with the report, save the
ticked ones) and its export buttons, through the page."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

from PIL import Image
from streamlit.testing.v1 import AppTest

from core.counting.tokens import tokenizer_for
from core.personas.character_cards import png_text_chunks
from core.personas.formats import import_file
from core.personas.persona import EXAMPLES_HEADING
from tests.apptest import open_expander


def card_png(name: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (80, 80), (40, 160, 90)).save(out, format="PNG")
    image = out.getvalue()
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": "{{char}} greets {{user}} warmly. <script>alert(1)</script>",
            "first_mes": "Hello {{user}}!",
            "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hello there.",
            "post_history_instructions": "Stay in character.",
        },
    }
    body = b"chara\0" + base64.b64encode(json.dumps(card).encode())
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    iend = image.rindex(b"IEND") - 4
    return image[:iend] + chunk + image[iend:]


def show_personas(at: AppTest) -> AppTest:
    at.switch_page("app_pages/personas.py").run()
    assert not at.exception, at.exception
    return at


def uploader(at: AppTest) -> Any:
    return next(u for u in at.file_uploader if u.key and u.key.startswith("persona_import_files_"))


def test_import_preview_then_save_the_ticked_ones(app: AppTest) -> None:
    show_personas(app)
    agent = {
        "meta": {"title": "Chef", "avatar": "🧑‍🍳", "description": "Cooks."},
        "config": {"systemRole": "You are a chef.", "params": {"temperature": 0.5}},
    }
    app.text_input(key="persona_import_user_name").input("Sam").run()
    uploader(app).set_value(
        [
            ("aria.png", card_png("Aria"), "image/png"),
            ("broken.json", b"{nope", "application/json"),
            ("chef.json", json.dumps(agent).encode(), "application/json"),
        ]
    ).run()
    assert not app.exception, app.exception
    # The preview: one tick box per persona, the report, the bad file's error; nothing saved yet.
    picks = [c for c in app.checkbox if c.key and c.key.startswith("persona_import_pick::")]
    assert [c.label for c in picks] == ["Save Aria as “aria”", "Save Chef as “chef”"]
    assert any("Not imported: broken.json: the file is not valid JSON" in e.value for e in app.error)
    captions = [c.value for c in app.caption]
    assert "From aria.png · character card V2 (PNG, 'chara' chunk)" in captions
    progress = [p.text for p in app.get("progress")]
    assert any(t.startswith("System message: ") and "of a 8,192-token budget" in t for t in progress)
    codes = [c.value for c in app.code]
    assert any(c.startswith("Aria greets Sam warmly. <script>") for c in codes)  # shown as text
    tables = [t.value for t in app.dataframe]
    assert any("post_history_instructions" in t.to_string() for t in tables)
    assert "chat::aria" not in {b.key for b in app.button}  # nothing saved before the choice
    # Untick the chef, save: only Aria is saved, and it is in the gallery and the selector.
    app.checkbox(key=picks[1].key).uncheck().run()
    app.button(key="persona_import_save").click().run()
    assert not app.exception, app.exception
    assert [s.value for s in app.success if "Saved" in s.value] == ["Saved 🎭 Aria."]
    keys = {b.key for b in app.button}
    assert "chat::aria" in keys and "chat::chef" not in keys
    assert "🎭 Aria" in app.selectbox(key="persona_id").options
    assert uploader(app).key == "persona_import_files_1"  # emptied for the next import


def test_export_buttons_give_files_that_import_back(app: AppTest) -> None:
    show_personas(app)
    labels = {b.key: b.label for b in app.get("download_button") if b.key and b.key.startswith("export::")}
    assert labels["export::card-png::foodie"] == "Character card (PNG)"
    assert labels["export::lobehub::foodie"] == "LobeHub agent (JSON)"
    assert labels["export::card-v3::foodie"] == "Character card V3 (JSON)"


def test_the_import_panel_in_chinese(start_app: Any) -> None:
    at = start_app()
    at.query_params["lang"] = "zh-CN"
    at.run()
    show_personas(at)
    expanders = [e.label for e in at.expander]
    assert "从其他应用导入" in expanders
    uploader(at).set_value([("aria.png", card_png("Aria"), "image/png")]).run()
    assert any(c.label == "保存 Aria，编号为“aria”" for c in at.checkbox)
    assert any(p.text.startswith("系统消息：") for p in at.get("progress"))


def test_the_card_png_helper_is_a_real_card() -> None:
    data = card_png("Aria")
    assert "chara" in png_text_chunks(data)
    assert import_file("aria.png", data).personas[0].persona.name == "Aria"


def test_editing_an_imported_persona_keeps_what_the_form_does_not_show(app: AppTest) -> None:
    show_personas(app)
    uploader(app).set_value([("aria.png", card_png("Aria"), "image/png")]).run()
    app.button(key="persona_import_save").click().run()
    imported = app.session_state["service"].workspace.custom_personas()["aria"]
    assert imported.examples and imported.avatar_image and imported.extensions
    app.button(key="edit::aria").click().run()
    next(w for w in app.text_input if w.label == "Name").input("Aria Two")
    app.button(key="FormSubmitter:persona_form-Save").click().run()
    assert not app.error, [e.value for e in app.error]
    edited = app.session_state["service"].workspace.custom_personas()["aria"]
    assert edited.name == "Aria Two"
    assert edited.model_copy(update={"name": "Aria"}) == imported


def test_the_next_call_view_shows_the_examples_with_their_tokens(app: AppTest) -> None:
    show_personas(app)
    uploader(app).set_value([("aria.png", card_png("Aria"), "image/png")]).run()
    app.button(key="persona_import_save").click().run()
    app.button(key="chat::aria").click().run()
    assert not app.exception, app.exception
    app.switch_page("app_pages/chat.py")  # AppTest reruns the page it last switched to
    open_expander(app, "next_call_open")  # the next call's table, drawn only while open
    frames = [t.value for t in app.table if "text" in getattr(t.value, "columns", [])]
    system = next(f for f in frames if "role" in f.columns and (f["role"] == "system").any())
    row = system[system["role"] == "system"].iloc[0]
    assert EXAMPLES_HEADING in row["text"] and row["text"].endswith("User: Hi\nAssistant: Hello there.")
    assert row["tokens"] == tokenizer_for("gpt-4o-mini").count_message(
        {"role": "system", "content": row["text"]}
    )


def test_the_chat_draws_an_imported_persona_with_its_picture(app: AppTest) -> None:
    show_personas(app)
    uploader(app).set_value([("aria.png", card_png("Aria"), "image/png")]).run()
    app.button(key="persona_import_save").click().run()
    assert any(i.value for i in app.get("image"))  # the gallery card shows the picture
    app.button(key="chat::aria").click().run()
    greeting = next(m for m in app.chat_message if m.name == "assistant")
    assert "/media/" in greeting.avatar, greeting.avatar  # a picture Streamlit serves, not the emoji


def test_the_editor_writes_few_shot_examples(app: AppTest) -> None:
    show_personas(app)
    app.button(key="duplicate::foodie").click().run()
    next(w for w in app.text_input if w.label.startswith("Id")).input("snacks")
    examples = next(w for w in app.text_area if w.label == "Few-shot examples (optional)")
    examples.input("User: 小笼包？\nAssistant: 上海的。\n皮薄汤多。")
    app.button(key="FormSubmitter:persona_form-Save").click().run()
    assert not app.error, [e.value for e in app.error]
    saved = app.session_state["service"].custom_personas()["snacks"]
    assert [(e.role, e.content) for e in saved.examples] == [
        ("user", "小笼包？"),
        ("assistant", "上海的。\n皮薄汤多。"),
    ]
