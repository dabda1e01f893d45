"""core.validation: one sentence per pydantic error, for the persona loader and conversation import."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.validation import describe_problems, describe_validation_error, describe_value, field_path


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = None


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    options: Options = Options()
    items: list[Item] = []
    tags: list[Annotated[str, Field(max_length=3)]] = []
    fallback: Options | None = None
    by_key: dict[str, Options] = {}

    @field_validator("name")
    @classmethod
    def _no_x(cls, value: str) -> str:
        if "x" in value:
            raise ValueError(f"must not contain x, got {value!r}")
        return value


def error_of(data: Any, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Record.model_validate(data, **kwargs)
    return caught.value


def test_missing_field() -> None:
    assert describe_problems(error_of({})) == ["missing required field 'name'"]
    assert describe_problems(error_of({"name": "a", "items": [{"content": "hi"}]})) == [
        "missing required field 'items[0].role'"
    ]


def test_nested_model_and_list_paths_show_the_value() -> None:
    exc = error_of({"name": "a", "options": {"temperature": 3}, "tags": ["ok", "long"]})
    assert describe_problems(exc) == [
        "options.temperature: Input should be less than or equal to 2 (got 3)",
        "tags[1]: String should have at most 3 characters (got 'long')",
    ]


def test_literal_in_a_list_of_models() -> None:
    exc = error_of({"name": "a", "items": [{"role": "bot", "content": "hi"}]})
    assert describe_problems(exc) == ["items[0].role: Input should be 'user' or 'assistant' (got 'bot')"]


def test_unknown_field_suggests_and_lists_allowed_fields_of_the_nested_model() -> None:
    exc = error_of({"name": "a", "items": [{"role": "user", "contnet": "hi"}]})
    assert describe_problems(exc, model=Record) == [
        "missing required field 'items[0].content'",
        "unknown field 'contnet' in items[0] (did you mean 'content'?); allowed fields: role, content",
    ]
    # Without the model there is nothing to suggest from.
    assert describe_problems(exc)[1] == "unknown field 'contnet' in items[0]"


def test_allowed_fields_are_listed_once_per_mapping() -> None:
    exc = error_of({"name": "a", "colour": 1, "nmae": 2, "options": {"sede": 1}})
    allowed = "name, options, items, tags, fallback, by_key"
    assert describe_problems(exc, model=Record) == [
        "unknown field 'sede' in options (did you mean 'seed'?); allowed fields: temperature, seed",
        f"unknown field 'colour'; allowed fields: {allowed}",
        "unknown field 'nmae' (did you mean 'name'?)",
    ]


def test_unknown_field_inside_optional_model_and_dict_values() -> None:
    exc = error_of({"name": "a", "fallback": {"temprature": 1}, "by_key": {"k": {"sede": 1}}})
    assert describe_problems(exc, model=Record) == [
        "unknown field 'temprature' in fallback (did you mean 'temperature'?); "
        "allowed fields: temperature, seed",
        "unknown field 'sede' in by_key.k (did you mean 'seed'?); allowed fields: temperature, seed",
    ]


def test_unknown_hint_replaces_the_suggestion() -> None:
    exc = error_of({"name": "a", "id": "b"})
    hints = {"id": "the id is the file name, so remove this line"}
    assert describe_problems(exc, model=Record, unknown_hints=hints) == [
        "unknown field 'id': the id is the file name, so remove this line"
    ]


def test_own_validator_message_and_the_top_level() -> None:
    assert describe_problems(error_of({"name": "box"})) == ["name: must not contain x, got 'box'"]
    assert describe_problems(error_of([1, 2])) == [
        "the top level: Input should be a valid dictionary or instance of Record (got a list)"
    ]


def test_key_that_is_not_text() -> None:
    assert describe_problems(error_of({"name": "a", 1: "x"}, strict=True)) == [
        "key 1 is not a field name (keys must be text)"
    ]


def test_more_errors_than_shown_are_counted() -> None:
    data: dict[str, Any] = {"name": "a", **{f"k{i}": i for i in range(13)}}
    problems = describe_problems(error_of(data), max_shown=10)
    assert len(problems) == 11
    assert problems[9] == "unknown field 'k9'"
    assert problems[10] == "and 3 more problems"
    assert describe_problems(error_of(data), max_shown=12)[-1] == "and 1 more problem"
    assert describe_problems(error_of(data), max_shown=13)[-1] == "unknown field 'k12'"


def test_line_of_prefixes_the_lines_it_finds() -> None:
    calls: list[tuple[tuple[str | int, ...], bool]] = []

    def line_of(loc: tuple[str | int, ...], want_key: bool) -> int | None:
        calls.append((loc, want_key))
        return 7 if loc[0] == "options" else None

    exc = error_of({"name": "", "options": {"temperature": -1, "seeds": 1}})
    assert describe_problems(exc, line_of=line_of) == [
        "name: String should have at least 1 character (got '')",
        "line 7: options.temperature: Input should be greater than or equal to 0 (got -1)",
        "line 7: unknown field 'seeds' in options",
    ]
    # An unknown field asks for the line of its key; any other error for the line of the value.
    assert calls == [(("name",), False), (("options", "temperature"), False), (("options", "seeds"), True)]


def test_describe_validation_error_joins_the_problems() -> None:
    exc = error_of({"options": {"temperature": "hot"}})
    assert describe_validation_error(exc, model=Record) == (
        "missing required field 'name'; options.temperature: Input should be a valid number, "
        "unable to parse string as a number (got 'hot')"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (None, "nothing (null)"),
        ({"a": 1}, "a mapping"),
        ((1, 2), "a list"),
        (datetime.date(2024, 1, 2), "the date 2024-01-02 (quote it to make it text)"),
        (4096.0, "4096.0"),
        ("x" * 100, "'" + "x" * 56 + "..."),
    ],
)
def test_describe_value(value: Any, expected: str) -> None:
    assert describe_value(value) == expected
    assert len(describe_value(value)) <= 60 or isinstance(value, datetime.date)


def test_field_path() -> None:
    assert field_path(()) == ""
    assert field_path(("sampling", "temperature")) == "sampling.temperature"
    assert field_path(("starter_prompts", 2)) == "starter_prompts[2]"
    assert field_path(("messages", 0, "content")) == "messages[0].content"
