"""Compare that decides, in Chromium: a blind pair over two turns with one column slower than the
other (the fast one's answer shows while the slow one streams), a vote, and the leaderboard it
feeds; a three-prompt test set run twice around a persona edit, and the difference it shows."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.browser.conftest import MAIN, AppPage, OpenApp, StartStreamlit
from tests.openai_server import Fault, running_server
from ui.frame import PERSONAS_RECHECK_S

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ANSWER_TEXT = '[data-testid="stChatMessage"]'


def click(app: AppPage, name: str) -> None:
    app.page.locator(MAIN).get_by_role("button", name=name, exact=True).click()
    app.wait_idle()


def mode(app: AppPage, label: str) -> None:
    app.page.locator(MAIN).get_by_role("radio", name=label).click()
    app.wait_idle()


def ask(app: AppPage, text: str) -> None:
    box = app.page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(text)
    box.press("Enter")


def shows(app: AppPage, text: str) -> None:
    """Wait until the main area shows `text` (a click's rerun may start after a short idle)."""
    app.wait_until(
        f"() => document.querySelector('{MAIN}').innerText.includes({json.dumps(text)})", f"{text!r} shown"
    )
    app.wait_idle()


def main_text(app: AppPage) -> str:
    return app.page.locator(MAIN).inner_text()


def test_a_blind_pair_over_two_turns_with_a_slow_column_then_a_vote_and_the_leaderboard(
    start_streamlit: StartStreamlit, open_app: OpenApp, tmp_path: Path
) -> None:
    with running_server() as model:
        model.chunk_delay = 0.02
        # One model stalls 3 s after its first chunk, on every request.
        model.model_faults["gpt-4.1"] = Fault(delay=3.0, delay_after_chunks=1)
        server = start_streamlit(
            {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-decide-test", "OPENAI_MAX_RETRIES": "0"}
        )
        app = open_app(server)
        app.show_view("Compare")
        mode(app, "Blind pair")
        second_model = app.page.locator(MAIN).get_by_label("Model", exact=True).nth(1)
        second_model.fill("gpt-4.1")
        second_model.press("Enter")
        app.wait_idle()
        app.page.locator(MAIN).get_by_role("button", name="Start the blind pair", exact=True).click()
        shows(app, "Who answered is hidden until you vote")

        for question in ("Peking duck?", "And the pancakes?"):
            ask(app, question)
            # The fast column's answer is on screen while the slow one still streams.
            app.wait_until(
                f"""() => {{
                    const text = document.querySelector('{MAIN}').innerText;
                    return text.split('You said: {question}').length === 2 && text.includes('streaming');
                }}""",
                "the fast column's answer showing while the slow one streams",
            )
            app.wait_until(
                f"""() => {{
                    const text = document.querySelector('{MAIN}').innerText;
                    return text.split('You said: {question}').length === 3 && !text.includes('streaming');
                }}""",
                "both columns answered",
            )
            app.wait_idle()
            app.assert_no_exception()
            text = main_text(app)
            assert text.count(f"You said: {question}") == 2
            # Nobody named, no sizes or costs that would tell them apart.
            assert "gpt-4" not in text and "prompt " not in text and "$" not in text
        assert len(model.chat_requests) == 4
        app.screenshot("decide-01-blind-pair")

        click(app, "A is better")
        shows(app, "You preferred")
        text = main_text(app)
        assert "gpt-4.1" in text and "gpt-4o-mini" in text  # revealed after the vote
        assert "You preferred" in text
        click(app, "New comparison")
        shows(app, "Leaderboard as CSV")
        board = list(csv.DictReader(io.StringIO(app.download("Leaderboard as CSV", tmp_path / "board.csv"))))
        assert len(board) == 2
        assert {row["model"] for row in board} == {"gpt-4.1", "gpt-4o-mini"}
        assert sorted((row["wins"], row["losses"]) for row in board) == [("0", "1"), ("1", "0")]
        assert float(board[0]["rating"]) > float(board[1]["rating"])
        assert "Not enough votes yet" in main_text(app)
        app.screenshot("decide-02-leaderboard")


def test_a_test_set_twice_around_a_persona_edit_shows_what_changed(
    start_streamlit: StartStreamlit, open_app: OpenApp, tmp_path: Path
) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    for name in ("foodie.yaml", "translator.yaml"):
        shutil.copy(REPO / "personas" / name, personas / name)
    server = start_streamlit({"PERSONAS_DIR": str(personas)})
    app = open_app(server)
    app.show_view("Compare")
    mode(app, "Test sets")
    app.page.locator(MAIN).get_by_label("Name", exact=True).fill("menus")
    prompts = app.page.locator(MAIN).get_by_label("Prompts, one per line")
    prompts.fill("北京烤鸭怎么吃？\nWhat is a good ramen?\nName one spice")
    prompts.blur()
    app.wait_idle()
    click(app, "Save the test set")
    shows(app, "3 prompts")
    click(app, "Run the test set")
    app.wait_until(
        f"() => document.querySelector('{MAIN}').innerText.includes('Last run')", "the first run's results"
    )
    app.wait_idle()
    app.assert_no_exception()
    assert "Against the run before" not in main_text(app)

    # Edit the foodie's system prompt (the file), then run the same set again.
    path = personas / "foodie.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["system_prompt"] += " 回答时先说一句欢迎词。"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    time.sleep(PERSONAS_RECHECK_S + 0.1)  # the server looks at the folder again at most this often
    click(app, "Run the test set")
    app.wait_until(
        f"() => document.querySelector('{MAIN}').innerText.includes('Against the run before')",
        "the second run's difference",
    )
    app.wait_idle()
    app.assert_no_exception()
    text = main_text(app)
    line = next(line for line in text.splitlines() if line.startswith("Against the run before"))
    # Only the edited persona's three answers changed, each prompt longer by the added sentence.
    assert line.startswith("Against the run before: 3 of 6 answers changed · prompt tokens +"), line
    assert text.count("changed since the last run") == 3
    assert text.count("same as the last run") == 3
    app.screenshot("decide-03-test-set", full_page=True)
