"""The compare view through the page: columns answer one message each, with their own figures;
a comparison is saved and reopens; blind picks are tallied."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.apptest import click
from tests.conftest import APP_PATH


def show_compare(at: AppTest) -> AppTest:
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    return at


def start(at: AppTest, *, blind: bool = False) -> AppTest:
    show_compare(at)
    at.selectbox(key="compare_persona::1").select("translator")
    at.selectbox(key="compare_persona::2").select("foodie").run()
    at.text_input(key="compare_model::2::foodie").input("gpt-4.1-mini")
    if blind:
        at.toggle(key="blind").set_value(True)
    click(at, "Start comparing")
    return at


def ask(at: AppTest, text: str) -> AppTest:
    at.chat_input(key="compare_input").set_value(text).run()
    assert not at.exception, at.exception
    return at


def test_three_columns_answer_with_their_own_figures(app: AppTest) -> None:
    start(app)
    ask(app, "北京烤鸭怎么吃？")
    comparison = app.session_state.service.comparison
    snapshot = comparison.snapshot()
    assert not snapshot.busy and len(snapshot.columns) == 3
    assert [view.model for view in snapshot.columns] == ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-mini"]
    for view in snapshot.columns:
        assert view.state == "done" and view.figures.prompt_tokens_reported is not None
    labels = [m.value for m in app.markdown if m.value.startswith("**")]
    assert "**🍜 美食家 · gpt-4o-mini**" in labels and "**🍜 美食家 · gpt-4.1-mini**" in labels
    figures = [c.value for c in app.caption if c.value.startswith("prompt ")]
    assert len(figures) == 3 and all("first token" in f and "total" in f for f in figures)
    assert len(app.get("vega_lite_chart")) == 1  # the per-message chart across columns
    # Each column's conversation has the question and its own answer.
    for view in snapshot.columns:
        assert [m.role for m in view.messages[1:]] == ["user", "assistant"]


def test_a_comparison_is_saved_and_reopens(app: AppTest) -> None:
    start(app)
    ask(app, "first question to compare")
    click(app, "New comparison")
    saved = [b for b in app.button if b.key and b.key.startswith("open_comparison::")]
    assert len(saved) == 1 and saved[0].label.startswith("first question to compare")
    # A new browser session (a reload) lists it and opens it intact.
    again = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    show_compare(again)
    next(b for b in again.button if b.key and b.key.startswith("open_comparison::")).click().run()
    reopened = again.session_state.service.comparison.snapshot()
    assert [r.text for r in reopened.rounds] == ["first question to compare"]
    assert all(view.messages[-1].role == "assistant" for view in reopened.columns)


def test_blind_mode_hides_labels_until_a_pick_and_the_leaderboard_counts_it(app: AppTest) -> None:
    start(app, blind=True)
    ask(app, "which is best?")
    snapshot = app.session_state.service.comparison.snapshot()
    assert [view.label for view in snapshot.columns] == ["Answer A", "Answer B", "Answer C"]
    assert all(view.model is None for view in snapshot.columns)
    assert not any("gpt-" in c.value for c in app.caption if "budget" in c.value)
    # Saved, and listed without naming who answered.
    [(_, title)] = app.session_state.service.saved_comparisons()
    assert title == "which is best? (🙈 A · B · C)"
    click(app, "Prefer Answer B")
    snapshot = app.session_state.service.comparison.snapshot()
    assert snapshot.picks[-1].persona_id == "translator"
    assert "Answer B" not in [view.label for view in snapshot.columns]  # revealed
    click(app, "New comparison")
    board = next(d.value for d in app.dataframe if "Won · lost · tied" in d.value.columns)
    records = dict(zip(board["Persona"], board["Won · lost · tied"], strict=True))
    # The preferred answer beat each of the two others.
    assert records["translator"] == "2 · 0 · 0" and records["foodie"] == "0 · 1 · 0"
    assert board["Persona"].iloc[0] == "translator"  # rated first
