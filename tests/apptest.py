"""Helpers for driving the page under Streamlit's AppTest."""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Metric, Radio

from core.chat.conversation import Conversation
from core.chat.session import ChatSession


def send(at: AppTest, text: str) -> AppTest:
    """Type `text` into the chat input and let the page answer."""
    at.chat_input(key="chat_input").set_value(text).run()
    assert not at.exception, at.exception
    return at


def select_persona(at: AppTest, persona_id: str) -> AppTest:
    at.selectbox(key="persona_id").select(persona_id).run()
    assert not at.exception, at.exception
    return at


def show_page(at: AppTest, name: str) -> AppTest:
    """Go to one of the views: chat, personas, compare, whatif (app_pages/<name>.py)."""
    at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def click(at: AppTest, label: str) -> AppTest:
    """Click the button labelled `label`."""
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> Metric:
    """The dashboard's metric labelled `label`."""
    return next(m for m in at.metric if m.label == label)


def conversation_list(at: AppTest) -> Radio[Any]:
    """The sidebar's conversation list: a radio group, New conversation ("") first."""
    return next(r for r in at.sidebar.radio if r.key and r.key.startswith("conversation_list::"))


def new_conversation(at: AppTest) -> AppTest:
    """Pick New conversation in the sidebar's list."""
    conversation_list(at).set_value("").run()
    assert not at.exception, at.exception
    return at


def open_conversation(at: AppTest, conversation_id: str) -> AppTest:
    """Pick a conversation in the sidebar's list."""
    conversation_list(at).set_value(conversation_id).run()
    assert not at.exception, at.exception
    return at


def search_conversations(at: AppTest, text: str) -> AppTest:
    """Type `text` into the conversation list's search, opened first when closed."""
    if "search_open" not in at.session_state or not at.session_state["search_open"]:
        open_expander(at, "search_open")
    at.sidebar.text_input(key="conversation_search").input(text).run()
    assert not at.exception, at.exception
    return at


def listed_titles(at: AppTest) -> list[str]:
    """The titles the sidebar lists, newest first (after New conversation)."""
    return list(conversation_list(at).options[1:])


def open_expander(at: AppTest, key: str) -> AppTest:
    """Open the expander keyed `key` (ui/layout.lazy_expander: its content is drawn only while open)."""
    at.session_state[key] = True
    return at.run()


def open_settings(at: AppTest) -> AppTest:
    """The sidebar's Settings, opened when closed: their widgets (the API key, the base URL, the
    conversation's model, budget and policy) are drawn only while open."""
    if not at.session_state["settings_open"]:
        open_expander(at, "settings_open")
    return at


def session(at: AppTest, persona_id: str = "foodie") -> ChatSession:
    """The session open for `persona_id` in this browser session."""
    workspace = at.session_state.service.workspace
    return workspace.sessions[workspace.current[persona_id]]


def conversation(at: AppTest, persona_id: str = "foodie") -> Conversation:
    return session(at, persona_id).conversation


def page_text(at: AppTest) -> str:
    """The text of every markdown, caption and alert on the page."""
    kinds = ("markdown", "caption", "error", "success", "info", "warning")
    return "\n".join(str(element.value) for kind in kinds for element in getattr(at, kind))


def open_key(at: AppTest, persona_id: str = "foodie") -> str:
    """The key of the conversation open for `persona_id` (its store id once saved)."""
    return str(at.session_state.service.workspace.current[persona_id])


def setting(at: AppTest, name: str, persona_id: str = "foodie") -> Any:
    """The sidebar widget of the open conversation's setting `name` (model, budget, reply_cap),
    the sidebar's Settings opened first when closed (their widgets are drawn only while open)."""
    open_settings(at)
    key = f"{name}::{open_key(at, persona_id)}"
    return at.text_input(key=key) if name == "model" else at.number_input(key=key)


_CHECK_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def images_in(text: str) -> list[str]:
    """The address of every image a CommonMark reader (with GitHub's tables) would load from
    `text`: a parser of its own, not the app's."""
    found: list[str] = []

    def walk(tokens: list[Token]) -> None:
        for token in tokens:
            if token.type == "image":
                found.append(str(token.attrs.get("src")))
            walk(token.children or [])

    walk(_CHECK_PARSER.parse(text))
    return found
