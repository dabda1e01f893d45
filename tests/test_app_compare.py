"""The compare view through the page: columns answer one message each, with their own figures;
a comparison is saved and reopens; blind votes reach the leaderboard; a blind pair; test sets."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.counting.tokens import get_encoding
from core.personas.persona import Persona
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
    """Send `text` to every column; once they all answered, the page's next run (in a browser, the
    one the columns' fragment asks for when the last ends) draws and saves the answers."""
    at.chat_input(key="compare_input").set_value(text).run()
    assert not at.exception, at.exception
    assert at.session_state.service.comparison.wait(30)
    at.run()
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
    # The chat page lists it under the conversations, a link to the Compare page with it open.
    app.switch_page("app_pages/chat.py").run()
    [link] = app.get("page_link")
    assert link.proto.label.startswith("first question to compare") and link.proto.icon == "⚖️"
    comparison_id = app.session_state.service.saved_comparisons()[0][0]
    assert link.proto.query_string == f"cmp={comparison_id}"
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
    assert not any(c.value.startswith("prompt ") for c in app.caption)  # no sizes or costs yet
    assert not app.get("vega_lite_chart")
    # Only the Markdown export, which keeps the labels hidden: the JSON names who answered.
    assert [button.proto.label for button in app.get("download_button")] == ["Markdown"]
    click(app, "B is better")
    assert [button.proto.label for button in app.get("download_button")][:2] == ["JSON", "Markdown"]
    snapshot = app.session_state.service.comparison.snapshot()
    assert snapshot.picks[-1].persona_id == "translator"
    assert "Answer B" not in [view.label for view in snapshot.columns]  # revealed
    click(app, "New comparison")
    board = next(d.value for d in app.dataframe if "Won · lost · tied" in d.value.columns)
    records = dict(zip(board["Persona"], board["Won · lost · tied"], strict=True))
    # The preferred answer beat each of the two others.
    assert records["translator"] == "2 · 0 · 0" and records["foodie"] == "0 · 1 · 0"
    assert board["Persona"].iloc[0] == "translator"  # rated first


def test_a_blind_pair_stays_anonymous_over_two_turns_and_a_tie_reveals_it(app: AppTest) -> None:
    show_compare(app)
    app.segmented_control(key="compare_mode").set_value("blind").run()
    app.selectbox(key="compare_pair_persona::1").select("translator").run()
    click(app, "Start the blind pair")
    for question in ("Peking duck?", "And the pancakes?"):
        ask(app, question)
        snapshot = app.session_state.service.comparison.snapshot()
        assert [view.label for view in snapshot.columns] == ["Answer A", "Answer B"]
        assert not any(c.value.startswith("prompt ") or "`gpt-" in c.value for c in app.caption)
    assert [len(view.turns) for view in snapshot.columns] == [2, 2]  # each kept its own history
    labels = {b.label for b in app.button}
    assert {"A is better", "B is better", "🤝 Tie", "👎 All bad"} <= labels
    click(app, "🤝 Tie")
    snapshot = app.session_state.service.comparison.snapshot()
    assert not snapshot.labels_hidden and snapshot.picks[-1].outcome == "tie"
    assert sum(c.value.startswith("prompt ") for c in app.caption) == 2  # sizes and costs now shown
    assert "You called message 2 a tie." in [c.value for c in app.caption]


def run_test_set(at: AppTest) -> None:
    click(at, "Run the test set")
    assert not at.error, [e.value for e in at.error]
    run = at.session_state.service.test_run
    if run is not None:  # still running when the page drew its progress
        assert run.wait(30)
        at.run()  # in a browser, the progress fragment's next redraw
        assert not at.exception, at.exception
    assert at.session_state.service.test_run is None  # ended, and saved


def test_a_test_set_runs_twice_around_a_persona_edit_and_shows_the_difference(app: AppTest) -> None:
    service = app.session_state.service

    critic = Persona.model_validate(
        {"id": "critic", "name": "Critic", "avatar": "🧐", "description": "Judges dishes.",
         "system_prompt": "You judge dishes.", "model": "gpt-4o-mini", "context_budget": 4000,
         "max_reply_tokens": 200}
    )  # fmt: skip
    service.save_persona(critic)
    show_compare(app)
    app.segmented_control(key="compare_mode").set_value("tests").run()
    app.text_input(key="test_set_name").input("menus")
    app.text_area(key="test_set_text").input("北京烤鸭怎么吃？\nWhat is a good ramen?\nName one spice")
    click(app, "Save the test set")
    assert app.selectbox(key="test_set_choice").value == "menus"
    app.selectbox(key="compare_tests_persona::0").select("critic")
    app.selectbox(key="compare_tests_persona::1").select("translator").run()
    run_test_set(app)
    assert not any("Against the run before" in c.value for c in app.caption)
    totals = app.dataframe[0].value
    assert list(totals["Answered"]) == ["3/3", "3/3"]
    assert "Answers changed" not in totals.columns  # nothing to differ from yet

    edited = "You judge dishes in one short sentence."
    service.save_persona(critic.model_copy(update={"system_prompt": edited}))
    app.run()
    run_test_set(app)
    difference = next(c.value for c in app.caption if c.value.startswith("Against the run before"))
    encoding = get_encoding("o200k_base")
    added = 3 * (len(encoding.encode(edited)) - len(encoding.encode(critic.system_prompt)))
    assert difference.startswith(f"Against the run before: 3 of 6 answers changed · prompt tokens +{added} ·")
    assert list(app.dataframe[0].value["Answers changed"]) == [3, 0]
    changed = [c.value for c in app.caption if "changed since the last run" in c.value]
    assert len(changed) == 3

    # A vote on a result reaches the leaderboard: an open vote (the columns are named), so it
    # counts once all votes are chosen.
    app.segmented_control(key=f"test_vote::{service.test_runs('menus')[0].id}::0").set_value("A").run()
    assert any("No blind votes yet" in info.value for info in app.info)
    app.segmented_control(key="leaderboard_scope").set_value("all").run()
    board = next(d.value for d in app.dataframe if "Won · lost · tied" in d.value.columns)
    records = dict(zip(board["Persona"], board["Won · lost · tied"], strict=True))
    assert records == {"critic": "1 · 0 · 0", "translator": "0 · 1 · 0"}
