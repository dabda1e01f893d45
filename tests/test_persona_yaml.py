"""Personas written and read as YAML text: the editor's export and the import take the same path
as the files in personas/, with the same per-field messages."""

from __future__ import annotations

import pytest

from core.errors import PersonaFileError
from core.personas.persona import BUNDLED_PERSONAS_DIR, load_personas, parse_persona, persona_yaml

SHIPPED = load_personas(BUNDLED_PERSONAS_DIR).personas


@pytest.mark.parametrize("persona_id", list(SHIPPED))
def test_every_shipped_persona_round_trips_through_yaml(persona_id: str) -> None:
    persona = SHIPPED[persona_id]
    text = persona_yaml(persona)
    assert "id:" not in text.splitlines()[0]
    assert parse_persona(text, persona_id) == persona


def test_a_multi_line_system_prompt_is_written_as_a_block() -> None:
    text = persona_yaml(SHIPPED["foodie"])
    assert "system_prompt: |" in text
    assert "美食家" in text  # written as text, not escaped


def test_bad_yaml_text_gets_the_same_messages_as_a_bad_file(tmp_path) -> None:
    text = (
        "name: Mine\navatar: abc\ndescription: d\nsystem_prompt: s\n"
        "context_budget: 10\nmax_reply_tokens: 5\ntemprature: 1\n"
    )
    with pytest.raises(PersonaFileError) as caught:
        parse_persona(text, "mine")
    (tmp_path / "mine.yaml").write_text(text, encoding="utf-8")
    from_file = load_personas(tmp_path).errors[0]
    assert caught.value.problems == from_file.problems
    assert "line 2: avatar: must be an emoji" in str(caught.value)
    assert "unknown field 'temprature'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "persona_id", "problem"),
    [
        ("name: x\n", "bad id!", "valid persona id"),
        ("", "empty", "is empty"),
        ("- a list\n", "listy", "top level must be a mapping"),
        ("a: &x 1\nb: *x\n", "aliased", "not allowed"),
        ("x" * 300_000, "huge", "limited to"),
    ],
)
def test_bad_text_is_refused_clearly(text: str, persona_id: str, problem: str) -> None:
    with pytest.raises(PersonaFileError, match=problem):
        parse_persona(text, persona_id)
