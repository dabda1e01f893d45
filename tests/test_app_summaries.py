"""Summarize instead of drop, through the page, on the offline model: the summary shows where the
folded messages end, can be edited (with its versions), and the folded messages are badged."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.chat.conversation import MessageState
from tests.apptest import conversation, open_expander, open_key, open_settings, send, session


def test_a_summarize_conversation_shows_and_edits_its_summary(app: AppTest) -> None:
    open_settings(app).selectbox(key=f"policy::{open_key(app)}").select("summarize").run()
    for i in range(10):
        send(app, f"第{i}个问题：四川火锅、重庆小面和成都担担面，哪一个最适合第一次去四川的人？")
    chat = conversation(app)
    assert chat.settings.context_policy == "summarize"
    summary = chat.summary
    assert summary is not None and chat.summary_events
    folded = [m for m in chat.messages if m.state is MessageState.SUMMARIZED]
    assert folded and not [m for m in chat.messages if m.state is MessageState.TRIMMED]
    expander = next(e for e in app.expander if e.label.startswith("Summary of"))
    assert f"{summary.tokens} tokens" in expander.label
    assert ":gray-badge[summarized · folded into the summary]" in [m.value for m in app.markdown]
    # Edit it: a new version by the user, sent from the next call on.
    area = app.text_area(key=f"summary::{open_key(app)}::{len(summary.versions)}")
    area.input("用户改写的摘要：他们在比较四川的小吃。").run()
    next(b for b in app.button if b.key == f"summary_save::{open_key(app)}").click().run()
    assert not app.exception
    edited = conversation(app).summary
    assert edited.text == "用户改写的摘要：他们在比较四川的小吃。"
    assert [v.source for v in edited.versions][-1] == "user"
    send(app, "下一个问题")
    assert session(app).last_turn.summary_tokens == conversation(app).summary.tokens


def test_a_pinned_message_is_kept_in_context_and_badged(app: AppTest) -> None:
    send(app, "记住：我对花生过敏。")
    send(app, "第二个问题")
    chat = conversation(app)
    first = chat.messages[1]
    # In the expander of what the next call sends, which stays open once a pin changes.
    open_expander(app, "next_call_open")
    app.multiselect(key=f"pins::{open_key(app)}::{len(chat.messages)}").select(first.id).run()
    assert conversation(app).messages[1].pinned
    assert app.session_state["next_call_open"] and app.table  # still open, the table drawn
    assert ":blue-badge[📌 pinned]" in [m.value for m in app.markdown]
    for i in range(12):
        send(app, f"第{i}个问题：四川火锅、重庆小面和成都担担面，哪一个最适合第一次去四川的人？")
    chat = conversation(app)
    assert chat.trim_events
    assert chat.messages[1].state is MessageState.CONTEXT and chat.messages[1].pinned
    assert chat.messages[3].state is MessageState.TRIMMED  # the unpinned second question went
