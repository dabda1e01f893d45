"""The page's state: every `st.session_state` key the pages use, in one place, typed.

Values a page keeps between runs are read and written through `PageState` (`page_state()`);
widgets are given their keys from `Key` or the per-conversation helpers below, so no key is a
string typed in two places. What the chat input or a chat button asks for is an `Action`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

import streamlit as st

from core.notices import Notice
from core.service import StartedReply, VisitorService


class Key(StrEnum):
    """Every fixed session-state key (widgets' keys included)."""

    SERVICE = "service"  # this visitor's VisitorService
    LOCAL_VISITOR = "local_visitor"  # whether this browser session is at the server's machine
    SIGNED_IN_AS = "signed_in_as"  # who signed in (OIDC), False when nobody: read once a session
    RERUN_PAGE = "rerun_page"  # a callback in a fragment changed what the whole page shows
    REPLY = "reply"  # the StartedReply a chat input's or button's callback began, for the page to stream
    PERSONA = "persona_id"  # the persona selector
    CATALOG_IDS = "catalog_ids"  # the persona ids this run lists (callbacks check against it)
    VIEW = "view"  # the view switch at the top of the page (a page's url path)
    VIEW_CHOSEN = "view_chosen"  # the view picked there, for the page to switch to
    VIEW_SHOWN = "view_shown"  # the view the last run showed
    VIEW_PAGES = "view_pages"  # (language, the views' st.Page objects by URL path), made once
    LANGUAGE_SWITCH = "lang"  # the sidebar's language selector
    LANGUAGE_CHOSEN = "lang_chosen"  # the language picked there (kept over a reload by ?lang=)
    HTML_LANG_SET = "html_lang_set"
    RETURN_LINK_CHECKED = "return_link_checked"  # after sign-in, the kept ?c= link was looked for
    SIGN_OUT = "sign_out"
    WORKSPACE_TOKEN = "workspace_token"  # the private link's token, put back in the URL on every page
    API_KEY = "api_key"
    BASE_URL = "base_url"
    CONVERSATION_SEARCH = "conversation_search"
    IMPORT_FILE = "import_file"
    CHAT_INPUT = "chat_input"
    # Expanders whose content is drawn only while open (ui/layout.lazy_expander)
    SETTINGS_OPEN = "settings_open"  # the sidebar's settings: language, connection, model, budget, export
    LIMIT_NOTES = "limit_notes"  # what the deployer's limits changed while the settings were closed
    NEXT_CALL_OPEN = "next_call_open"
    TURNS_OPEN = "turns_open"
    SEARCH_OPEN = "search_open"  # the conversation list's search
    # compare
    COMPARE_COUNT = "compare_count"
    COMPARE_BLIND = "blind"
    COMPARE_INPUT = "compare_input"
    COMPARE_MODE = "compare_mode"  # side by side, blind pair or test sets
    LEADERBOARD_SCOPE = "leaderboard_scope"  # blind votes only, or all votes
    TEST_SET_CHOICE = "test_set_choice"  # the test set shown ("" for a new one)
    TEST_SET_NAME = "test_set_name"
    TEST_SET_TEXT = "test_set_text"
    TEST_SET_FILE = "test_set_file"
    TEST_SET_COUNT = "test_set_count"
    # personas
    GALLERY_PAGE = "gallery_page"  # the persona gallery's page number
    PERSONA_EDITOR = "persona_editor"  # {"base": Persona | None, "custom": bool} while editing
    PERSONA_IMPORT = "persona_import"  # the import panel between runs (ui/persona_exchange.py)
    PERSONA_IMPORT_USER = "persona_import_user_name"
    PERSONA_IMPORT_SAVE = "persona_import_save"
    # what if
    WHATIF_BUDGET = "whatif_budget"
    WHATIF_POLICY = "whatif_policy"
    WHATIF_MODEL = "whatif_model"
    WHATIF_CACHE_RULE = "whatif_cache_rule"


class Action(StrEnum):
    """What the chat input or a chat button asks for (`VisitorService.start`)."""

    SEND = "send"
    RETRY = "retry"
    REGENERATE = "regenerate"
    CONTINUE = "continue"


# --- keys of widgets that belong to one conversation (its settings survive switching) ----------


def setting_key(setting: str, conversation_key: str) -> str:
    """A conversation's setting widget: `model`, `budget`, `reply_cap`, `policy`."""
    return f"{setting}::{conversation_key}"


def conversation_list_key(opened: str) -> str:
    """The sidebar's conversation list while `opened` is open ("" for a new conversation): a new
    widget whenever another opens, drawn with it chosen (setting a drawn radio's value from the
    script races the browser's own, which can then report a change nobody made)."""
    return f"conversation_list::{opened}"


def title_key(conversation_key: str) -> str:
    return f"title::{conversation_key}"


def show_all_key(conversation_key: str) -> str:
    return f"show_all::{conversation_key}"


def pins_key(conversation_key: str, messages: int) -> str:
    return f"pins::{conversation_key}::{messages}"


def summary_key(conversation_key: str, versions: int) -> str:
    return f"summary::{conversation_key}::{versions}"


def test_vote_key(run_id: str, prompt: int) -> str:
    """The vote on one prompt's answers in one test run."""
    return f"test_vote::{run_id}::{prompt}"


def compare_key(field: str, index: int, persona_id: str | None = None) -> str:
    """A compare column's widget: `persona`, `model`, `budget` (the last two per persona)."""
    return f"compare_{field}::{index}" + (f"::{persona_id}" if persona_id is not None else "")


def persona_import_files_key(round_: int) -> str:
    """The import panel's uploader: a new key after each save empties it."""
    return f"persona_import_files_{round_}"


def persona_import_pick_key(file_index: int, persona_index: int) -> str:
    return f"persona_import_pick::{file_index}::{persona_index}"


def persona_export_key(export_format: str, persona_id: str) -> str:
    return f"export::{export_format}::{persona_id}"


class PageState:
    """Typed access to the values the pages keep in `st.session_state`."""

    def __init__(self, state: Any) -> None:
        self._state = state

    @property
    def service(self) -> VisitorService:
        return cast(VisitorService, self._state[Key.SERVICE])

    @property
    def persona_id(self) -> str | None:
        return cast("str | None", self._state.get(Key.PERSONA))

    @persona_id.setter
    def persona_id(self, value: str) -> None:
        self._state[Key.PERSONA] = value

    @property
    def catalog_ids(self) -> tuple[str, ...]:
        return cast("tuple[str, ...]", self._state.get(Key.CATALOG_IDS, ()))

    @catalog_ids.setter
    def catalog_ids(self, value: tuple[str, ...]) -> None:
        self.keep(Key.CATALOG_IDS, value)

    def hold_reply(self, reply: StartedReply) -> None:
        """A callback began a turn: the page streams it in this run."""
        self._state[Key.REPLY] = reply

    def take_reply(self) -> StartedReply | None:
        reply = cast("StartedReply | None", self._state.get(Key.REPLY))
        if reply is not None:
            self._state[Key.REPLY] = None
        return reply

    def hold_limit_notes(self, conversation_key: str, notes: list[Notice]) -> None:
        """What the deployer's limits changed in a conversation's settings while they were closed,
        for the settings to say when opened."""
        if notes:
            held = cast("dict[str, list[Notice]]", self._state.setdefault(Key.LIMIT_NOTES, {}))
            held.setdefault(conversation_key, []).extend(notes)

    def take_limit_notes(self, conversation_key: str) -> list[Notice]:
        held = cast("dict[str, list[Notice]]", self._state.get(Key.LIMIT_NOTES, {}))
        return held.pop(conversation_key, [])

    def get(self, key: str, default: Any = None) -> Any:
        """A widget's value (for the keys built by the helpers above)."""
        return self._state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._state[key] = value

    def keep(self, key: str, value: Any) -> None:
        """`set`, when the value differs: a session state write costs a rerun tens of
        microseconds (Streamlit tracks it), a read almost nothing."""
        if self._state.get(key) != value:
            self._state[key] = value

    def has(self, key: str) -> bool:
        return key in self._state

    def pop(self, key: str) -> None:
        self._state.pop(key, None)


def page_state() -> PageState:
    return PageState(st.session_state)
