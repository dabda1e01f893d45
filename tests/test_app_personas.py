"""The persona gallery and editor through the page: browse, duplicate, edit, validate, import."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.personas.persona import BUNDLED_PERSONAS_DIR, load_personas, persona_yaml
from tests.apptest import click, conversation, send
from tests.conftest import APP_PATH

SHIPPED = load_personas(BUNDLED_PERSONAS_DIR).personas


def show_personas(at: AppTest) -> AppTest:
    at.switch_page("app_pages/personas.py").run()
    assert not at.exception, at.exception
    return at


def form_input(at: AppTest, label: str):
    return next(w for w in [*at.text_input, *at.text_area] if w.label == label)


def test_the_gallery_shows_every_persona_with_what_it_is(app: AppTest) -> None:
    show_personas(app)
    chat_buttons = [b for b in app.button if b.key and b.key.startswith("chat::")]
    assert sorted(b.key.removeprefix("chat::") for b in chat_buttons) == sorted(SHIPPED)
    headings = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert "#### 🍜 美食家" in headings
    captions = "\n".join(c.value for c in app.caption)
    assert "`gpt-4o-mini` · budget 1,024 · reply cap 250" in captions
    assert "Tags: 美食 · 中文" in captions
    # Shipped personas are read-only: they can be duplicated, not edited.
    assert not [b for b in app.button if b.key and b.key.startswith("edit::")]
    assert len([b for b in app.button if b.key and b.key.startswith("duplicate::")]) == len(SHIPPED)


def test_chat_from_a_card_opens_that_persona(app: AppTest) -> None:
    show_personas(app)
    app.button(key="chat::translator").click().run()
    assert app.selectbox(key="persona_id").value == "translator"
    assert app.chat_input(key="chat_input") is not None


def test_duplicate_edit_save_chat_and_reload(app: AppTest) -> None:
    show_personas(app)
    app.button(key="duplicate::foodie").click().run()
    form_input(app, "Id (letters, digits, _ and -)").input("hotpot")
    form_input(app, "Name").input("火锅专家")
    form_input(app, "System prompt (sent first, every call)").input("你只谈火锅。")
    app.button(key="FormSubmitter:persona_form-Save").click().run()
    assert not app.error, [e.value for e in app.error]
    assert any("Saved 🍜 火锅专家" in s.value for s in app.success)
    # It is in the selector, marked as yours in the gallery, and chats with its own prompt.
    assert "🍜 火锅专家" in app.selectbox(key="persona_id").options
    app.button(key="chat::hotpot").click().run()
    send(app, "鸳鸯锅怎么选？")
    assert conversation(app, "hotpot").system_prompt == "你只谈火锅。"
    # Saved in the workspace: a new browser session has it.
    again = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    assert "🍜 火锅专家" in again.selectbox(key="persona_id").options
    show_personas(again)
    assert again.button(key="edit::hotpot") is not None


def test_the_editor_refuses_bad_fields_all_at_once_beside_each_field(app: AppTest) -> None:
    """Every problem at once, each under its own field, named by the field's label in plain words
    (not "context_budget: Input should be greater than or equal to 64 (got 10)"); the number
    fields offer only what the validator takes."""
    show_personas(app)
    click(app, "New persona")
    form_input(app, "Name").input("")
    form_input(app, "Avatar (one emoji)").input("abc")
    budget = next(n for n in app.number_input if n.label == "Context budget (prompt tokens)")
    assert (budget.min, budget.max) == (64, 2_000_000)
    reply_cap = next(n for n in app.number_input if n.label == "Reply cap (tokens per reply)")
    assert (reply_cap.min, reply_cap.max) == (1, 200_000)
    app.button(key="FormSubmitter:persona_form-Save").click().run()
    errors = [e.value for e in app.error]
    assert errors == [
        "Name: required, please fill it in.",
        "Avatar (one emoji): must be an emoji such as 🍜 (one emoji only), got 'abc'",
        "Description (one line): required, please fill it in.",
        "System prompt (sent first, every call): required, please fill it in.",
    ]
    # Each in the slot right under its field, inside the form, above the Save button.
    shown = [(node.type, str(getattr(node, "label", "") or getattr(node, "value", ""))) for node in app.main]
    name_at = shown.index(("text_input", "Name"))
    assert shown[name_at + 1] == ("error", "Name: required, please fill it in.")
    avatar_at = shown.index(("text_input", "Avatar (one emoji)"))
    assert shown[avatar_at + 1][0] == "error" and shown[avatar_at + 1][1].startswith("Avatar (one emoji): ")
    assert len(app.selectbox(key="persona_id").options) == len(SHIPPED)  # nothing saved


def test_a_persona_yaml_round_trips_through_import(app: AppTest) -> None:
    show_personas(app)
    text = persona_yaml(SHIPPED["translator"]).replace("name: ", "name: My ", 1)
    uploads = [
        ("my-translator.yaml", text.encode(), "application/yaml"),
        ("translator.yaml", text.encode(), "application/yaml"),  # a shipped id: saved under another
        ("broken.yaml", b"name: x\navatar: abc\n", "application/yaml"),
    ]
    uploader = next(u for u in app.file_uploader if u.key == "persona_import_files_0")
    uploader.set_value(uploads).run()
    assert any("Not imported: broken.yaml: line 2: avatar" in e.value for e in app.error)
    app.button(key="persona_import_save").click().run()
    assert [s.value for s in app.success] == ["Saved 🌐 My Translator.", "Saved 🌐 My Translator."]
    assert app.button(key="edit::my-translator") is not None
    assert app.button(key="edit::translator-2") is not None
    assert not [b for b in app.button if b.key == "edit::translator"]  # the shipped one is untouched
