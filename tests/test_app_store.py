"""Conversations that last, through the page: reloads, the conversation list, private workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.policy.owners import LOCAL_OWNER
from core.store.database import Store
from tests.apptest import (
    click,
    conversation,
    conversation_list,
    listed_titles,
    new_conversation,
    open_conversation,
    open_expander,
    open_key,
    search_conversations,
    select_persona,
    send,
    setting,
)
from tests.conftest import APP_PATH, StartApp
from ui.frame import RETURN_LINK_STORAGE


def new_browser_session(query_params: dict[str, str] | None = None) -> AppTest:
    """A new browser session (a reload, another tab, another visitor) on a link with these parameters."""
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.query_params.update(query_params or {})
    return at.run()


def test_a_reload_returns_the_conversation_with_its_settings_and_record(start_app: StartApp) -> None:
    first = start_app()
    setting(first, "budget").set_value(2048).run()
    for text in ("北京烤鸭怎么吃？", "还有呢？"):
        send(first, text)
    before = conversation(first).to_dict()
    assert first.query_params["c"] == open_key(first)

    again = new_browser_session(first.query_params)  # what F5 does
    assert not again.exception
    assert conversation(again).to_dict() == before
    assert setting(again, "budget").value == 2048
    assert "北京烤鸭怎么吃？" in [m.value for m in again.markdown]
    assert len(again.get("vega_lite_chart")) == 2  # the charts are drawn from the reloaded record


def test_new_conversation_keeps_the_old_one_listed(app: AppTest) -> None:
    send(app, "first conversation question")
    first_key = open_key(app)
    new_conversation(app)
    assert len(conversation(app).messages) == 1
    send(app, "second conversation question")
    assert open_key(app) != first_key
    assert listed_titles(app) == ["second conversation question", "first conversation question"]
    # Opening the first one shows it again.
    open_conversation(app, first_key)
    assert open_key(app) == first_key
    assert [m.content for m in conversation(app).messages if m.role == "user"] == [
        "first conversation question"
    ]


def test_the_search_shows_once_there_are_two_conversations(app: AppTest) -> None:
    """Nothing to search in a single conversation: the search's expander comes with the second,
    of any persona."""

    def has_search() -> bool:
        return any("Search conversations" in e.label for e in app.sidebar.expander)

    send(app, "how to make dumplings")
    assert listed_titles(app) == ["how to make dumplings"] and not has_search()
    select_persona(app, "translator")
    send(app, "translate: hello")
    assert has_search()
    select_persona(app, "foodie")
    assert has_search() and listed_titles(app) == ["how to make dumplings"]


def test_rename_search_delete_and_undo(app: AppTest) -> None:
    send(app, "how to make dumplings")
    new_conversation(app)
    send(app, "best noodles in Lanzhou")
    key = open_key(app)
    open_expander(app, "settings_open").sidebar.text_input(key=f"title::{key}").input("Noodle trip").run()
    click(app, "Rename")
    assert listed_titles(app)[0] == "Noodle trip"

    search_conversations(app, "DUMPLING")
    assert listed_titles(app) == ["how to make dumplings"]
    search_conversations(app, "100%_")
    assert listed_titles(app) == [] and any("No conversation matches" in c.value for c in app.sidebar.caption)
    search_conversations(app, "")

    click(app, "Delete")
    assert "Noodle trip" not in listed_titles(app)
    assert any("Deleted “Noodle trip”" in i.value for i in app.sidebar.info)
    click(app, "Undo delete")
    assert "Noodle trip" in listed_titles(app)
    assert open_key(app) == key


def test_import_creates_a_new_conversation_and_overwrites_nothing(app: AppTest) -> None:
    send(app, "keep me")
    original_key, original = open_key(app), conversation(app).to_dict()
    exported = conversation(app).to_json()
    open_expander(app, "settings_open").file_uploader(key="import_file").set_value(
        ("foodie.json", exported.encode(), "application/json")
    ).run()
    assert not app.exception
    assert open_key(app) != original_key
    assert len(listed_titles(app)) == 2
    assert any("as a new conversation" in s.value for s in app.success)
    open_conversation(app, original_key)
    assert conversation(app).to_dict() == original


def test_private_workspaces_see_only_their_own(start_app: StartApp) -> None:
    alice = start_app(ACCESS_MODE="private")
    token = alice.query_params["w"]
    assert len(token) >= 32
    assert any("Bookmark this page's link" in i.value for i in alice.info)
    send(alice, "alice's secret recipe")
    alice_conversation = open_key(alice)

    # A visitor without the link gets a workspace of their own, empty.
    bob = new_browser_session()
    assert bob.query_params["w"] != token
    assert listed_titles(bob) == [] and len(conversation(bob).messages) == 1
    # Naming Alice's conversation in the link does not open it.
    bob = new_browser_session({"w": bob.query_params["w"], "c": alice_conversation})
    assert "alice's secret recipe" not in "\n".join(m.value for m in bob.markdown)
    assert any("cannot be opened" in e.value for e in bob.error)
    search_conversations(bob, "secret")
    assert listed_titles(bob) == []

    # Alice's link, in a new browser session, lists her conversation and opens it.
    again = new_browser_session({"w": token})
    assert listed_titles(again) == ["alice's secret recipe"]
    again = new_browser_session({"w": token, "c": alice_conversation})
    assert [m.content for m in conversation(again).messages if m.role == "user"] == ["alice's secret recipe"]


def test_a_tampered_private_link_is_refused(start_app: StartApp) -> None:
    start_app(ACCESS_MODE="private")  # sets the environment for this test
    at = new_browser_session({"w": "short"})
    assert any("not valid" in e.value for e in at.error)
    assert "Start a new workspace" in [b.label for b in at.button]


def test_a_database_that_is_not_one_is_reported_and_chat_still_works(
    start_app: StartApp, tmp_path: Path
) -> None:
    garbage = tmp_path / "not-a-db.db"
    garbage.write_bytes(b"this is not a database" * 100)
    at = start_app(DATABASE_URL=f"sqlite:///{garbage}")
    # Named by its file name; the server's folders are nobody's business (issue 17).
    assert any("not being saved" in w.value and "not-a-db.db is not" in w.value for w in at.warning)
    assert not any(str(tmp_path) in w.value for w in at.warning)
    send(at, "still works")
    assert conversation(at).turns
    assert garbage.read_bytes() == b"this is not a database" * 100


def unsent_offered(at: AppTest) -> str | None:
    """The text the page put into the chat input on its last run (None: it put none), with the
    notice that says why."""
    chat_input = at.chat_input[0].proto
    notices = [i.value for i in at.info if "could not be saved" in i.value]
    assert bool(notices) == chat_input.set_value
    return chat_input.value if chat_input.set_value else None


def test_a_stale_tab_is_told_to_reload_and_loses_no_saved_message(app: AppTest) -> None:
    send(app, "one")
    other_tab = new_browser_session(app.query_params)
    assert open_key(other_tab) == open_key(app)
    send(app, "two")
    send(other_tab, "three")  # written on a version the first tab has moved past
    assert any("saved elsewhere" in w.value for w in other_tab.warning)
    click(other_tab, "Reload this conversation")
    questions = [m.content for m in conversation(other_tab).messages if m.role == "user"]
    assert questions == ["one", "two"]
    assert not [w for w in other_tab.warning if w.icon == "💾"]  # the store's warning is gone
    # What was written in the stale tab is not lost: it is back in the chat input, said once.
    assert unsent_offered(other_tab) == "three"
    other_tab.run()
    assert unsent_offered(other_tab) is None
    # The first tab's record is intact, and the reloaded tab can go on.
    send(other_tab, "four")
    assert not [w for w in other_tab.warning if w.icon == "💾"]
    again = new_browser_session(app.query_params)
    assert [m.content for m in conversation(again).messages if m.role == "user"] == ["one", "two", "four"]


def test_a_reply_cut_by_a_crash_comes_back_interrupted_to_regenerate_or_continue(
    app: AppTest, database_url: str
) -> None:
    send(app, "北京烤鸭怎么吃？")
    key = open_key(app)
    # What a server killed mid-reply leaves: the question, saved before the call, and the draft
    # of its reply saved while it streamed.
    with Store(database_url) as store:
        stored, handle = store.load(LOCAL_OWNER, key)
        stored.add_user("还有呢？")
        store.save(LOCAL_OWNER, handle, stored, reply_draft="[Offline model] I received 4 messages")
    again = new_browser_session(app.query_params)  # the visitor reloads once the server is back
    assert not again.exception
    question, reply = conversation(again).messages[-2:]
    assert (question.content, reply.content) == ("还有呢？", "[Offline model] I received 4 messages")
    assert reply.interrupted
    assert ":orange-badge[interrupted · partial reply]" in [m.value for m in again.markdown]
    assert {"Regenerate last answer", "Continue the reply"} <= {b.label for b in again.button}
    click(again, "Continue the reply")
    assert conversation(again).messages[-2].automatic and not conversation(again).messages[-1].interrupted
    with Store(database_url) as store:
        reloaded, handle = store.load(LOCAL_OWNER, key)
    assert reloaded.to_dict() == conversation(again).to_dict() and not handle.reply_draft_saved


def test_a_stale_tabs_message_is_offered_back_after_a_browser_reload_too(app: AppTest) -> None:
    send(app, "one")
    other_tab = new_browser_session(app.query_params)
    send(app, "two")
    send(other_tab, "three")
    send(other_tab, "four")  # still stale: both are kept, in order
    again = new_browser_session(other_tab.query_params)  # F5 in the stale tab
    assert [m.content for m in conversation(again).messages if m.role == "user"] == ["one", "two"]
    assert unsent_offered(again) == "three\n\nfour"
    # Offered once: another reload (or tab) does not offer it again.
    assert unsent_offered(new_browser_session(other_tab.query_params)) is None


def test_the_page_saves_to_data_dir_when_no_database_url_is_set(
    clean_env: pytest.MonkeyPatch, start_app: StartApp, tmp_path: Path
) -> None:
    """As in the Docker image on a Space with persistent storage: DATA_DIR=/data, no DATABASE_URL."""
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    clean_env.delenv("DATABASE_URL")
    at = start_app(DATA_DIR=str(mounted))
    send(at, "kept across restarts")
    assert (mounted / "dashboard.db").is_file()
    with Store.from_environ({"DATABASE_URL": f"sqlite:///{mounted / 'dashboard.db'}"}) as store:
        [saved] = store.list(LOCAL_OWNER)
    assert saved.id == open_key(at) and saved.title == "kept across restarts"


def test_the_list_tells_conversations_apart_and_marks_the_open_one(app: AppTest) -> None:
    """Each conversation with its date and message count; the same title numbered; the open one
    the list's choice (a radio group, not a greyed-out disabled button) and "Open now"; a search
    shows the words around the match."""
    for reply_to in ("hello", "hello"):
        send(app, reply_to)
        send(app, "what about hot pot with lamb and sesame sauce?")
        new_conversation(app)
    send(app, "hello")
    open_id = open_key(app)
    listed = conversation_list(app)
    assert listed.options == ["🆕 New conversation", "hello (3)", "hello (2)", "hello (1)"]
    assert listed.value == open_id and not listed.disabled
    captions = list(listed.proto.captions)
    assert captions[0] == ""
    assert captions[1].startswith("Open now · ") and captions[1].endswith("UTC · 2 messages")
    assert all(c.endswith("UTC · 4 messages") for c in captions[2:])
    search_conversations(app, "SESAME")
    assert listed_titles(app) == ["hello (2)", "hello (1)"]
    snippets = [c.split("\n")[-1] for c in conversation_list(app).proto.captions[1:]]
    assert len(snippets) == 2 and all(s.startswith("“") and "sesame sauce" in s for s in snippets)


def signed_in_session(user: dict[str, object], query_params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.user = user
    at.query_params.update(query_params or {})
    return at.run()


def test_oidc_shows_who_is_signed_in_and_signs_out(start_app: StartApp) -> None:
    start_app(ACCESS_MODE="private")  # the environment of this test
    ada = {"is_logged_in": True, "name": "Ada Lovelace", "email": "ada@example.org"}
    at = signed_in_session({**ada, "iss": "https://id.example.org", "sub": "ada-1"})
    assert not at.exception, at.exception
    assert "Signed in as Ada Lovelace" in [c.value for c in at.sidebar.caption]
    at.sidebar.button(key="sign_out").click().run()
    assert not at.exception, at.exception
    # st.logout ran: the identity is gone (a browser then reloads onto the sign-in screen).
    assert at.user == {"is_logged_in": False}
    assert signed_in_session(at.user).button[0].label == "Sign in"
    # No name: the email says who it is.
    at = signed_in_session({"is_logged_in": True, "email": "bob@example.org", "iss": "i", "sub": "bob"})
    assert "Signed in as bob@example.org" in [c.value for c in at.sidebar.caption]


def test_a_conversation_link_opened_while_signed_out_opens_after_sign_in(start_app: StartApp) -> None:
    """The provider's callback lands on the front page: the link's conversation is kept in the
    tab's sessionStorage before sign-in, and the page goes back to it after."""
    start_app(ACCESS_MODE="private")
    conversation_id = "0123456789abcdef0123456789abcdef"
    signed_out = signed_in_session({"is_logged_in": False}, {"c": conversation_id})
    [kept] = signed_out.get("html")
    assert f'sessionStorage.setItem("persona-dashboard:return-to", "{conversation_id}")' in kept.proto.body
    # A link whose id is not one the store makes is never written into a script.
    assert not signed_in_session({"is_logged_in": False}, {"c": '");alert(1);//'}).get("html")
    user = {"is_logged_in": True, "iss": "https://id.example.org", "sub": "ada-1"}
    back = signed_in_session(user)
    scripts = [h.proto.body for h in back.get("html")]
    assert any(
        'sessionStorage.getItem("persona-dashboard:return-to")' in s and "location.replace" in s
        for s in scripts
    )
    back.run()  # once per session
    assert not any(RETURN_LINK_STORAGE in h.proto.body for h in back.get("html"))
    # Opened with its link already: nothing to restore.
    assert not any(
        RETURN_LINK_STORAGE in h.proto.body
        for h in signed_in_session(user, {"c": conversation_id}).get("html")
    )
