"""Pydantic validation errors as sentences a person can act on, for every loader in the app.

`describe_problems` turns each error of a `ValidationError` into one sentence that names the field
(`sampling.temperature`, `starter_prompts[2]`), says what is wrong and shows the value that was
given. Given the root model it also suggests the field an unknown name was probably meant to be and
lists the allowed ones; given a `line_of` lookup it starts each sentence with the line number.
"""

from __future__ import annotations

import datetime
import difflib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = [
    "FieldProblem",
    "LineOf",
    "describe_problems",
    "describe_validation_error",
    "describe_value",
    "field_limits",
    "field_path",
    "field_problems",
]

#: `line_of(loc, want_key)`: the line an error location points at, or None when unknown. `want_key`
#: asks for the line of the key itself (an unknown field) rather than of its value.
LineOf = Callable[[tuple[str | int, ...], bool], int | None]

_KEY_ERRORS = {"extra_forbidden", "invalid_key"}


def describe_problems(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    line_of: LineOf | None = None,
    unknown_hints: Mapping[str, str] | None = None,
    max_shown: int = 10,
) -> list[str]:
    """One sentence per error of `exc` (at most `max_shown`, then "and N more problems").

    `model` is the model that was validated; with it an unknown field gets a "did you mean" and
    the list of allowed fields (once per mapping). `line_of` prefixes "line N: " where it finds
    the line. `unknown_hints` maps a field path (as shown, e.g. "id" or "sampling.seed") to the
    explanation given when that field is unknown, instead of the suggestion and list.
    """
    errors = exc.errors(include_url=False)
    problems = []
    listed: set[tuple[str | int, ...]] = set()  # mappings whose allowed fields were already listed
    # Only the shown errors are described: looking up lines for thousands of them adds up.
    for error in errors[:max_shown]:
        loc = tuple(error["loc"])
        kind = error["type"]
        path = field_path(loc)
        if kind == "extra_forbidden":
            name, parent = str(loc[-1]), loc[:-1]
            problem = f"unknown field '{name}'" + (f" in {field_path(parent)}" if parent else "")
            if unknown_hints and path in unknown_hints:
                problem += f": {unknown_hints[path]}"
            else:
                allowed = _allowed_fields(model, parent)
                close = difflib.get_close_matches(name, allowed, n=1)
                if close:
                    problem += f" (did you mean '{close[0]}'?)"
                if allowed and parent not in listed:
                    listed.add(parent)
                    problem += f"; allowed fields: {', '.join(allowed)}"
        elif kind == "missing":
            problem = f"missing required field '{path}'"
        elif kind == "invalid_key":
            inside = f" in {field_path(loc[:-1])}" if len(loc) > 1 else ""
            problem = f"key {describe_value(loc[-1])}{inside} is not a field name (keys must be text)"
        elif kind == "value_error" or kind in OWN_CODES:  # a model's own validator: it words the value
            problem = f"{path or 'the top level'}: {error['msg'].removeprefix('Value error, ')}"
        else:
            problem = f"{path or 'the top level'}: {error['msg']} (got {describe_value(error['input'])})"
        line = line_of(loc, kind in _KEY_ERRORS) if line_of is not None else None
        problems.append(f"line {line}: {problem}" if line is not None else problem)
    hidden = len(errors) - max_shown
    if hidden > 0:
        problems.append(f"and {hidden} more problem{'s' if hidden > 1 else ''}")
    return problems


def describe_validation_error(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    line_of: LineOf | None = None,
    unknown_hints: Mapping[str, str] | None = None,
    max_shown: int = 10,
) -> str:
    """`describe_problems` joined with "; " into one message."""
    return "; ".join(
        describe_problems(exc, model=model, line_of=line_of, unknown_hints=unknown_hints, max_shown=max_shown)
    )


def describe_value(value: Any) -> str:
    """A short description of a value for an error message: its repr cut to 60 characters, or its kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    if isinstance(value, datetime.date):  # YAML reads an unquoted 2024-01-01 as a date
        return f"the date {value.isoformat()} (quote it to make it text)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def field_path(loc: Sequence[str | int]) -> str:
    """An error location as a path: ("sampling", "temperature") -> "sampling.temperature",
    ("starter_prompts", 2) -> "starter_prompts[2]"; "" for the top level."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _allowed_fields(model: type[BaseModel] | None, parent: Sequence[str | int]) -> list[str]:
    """Field names of the model found at `parent` inside `model`; [] when there is none."""
    current: Any = model
    for part in parent:
        current = _step(current, part)
    models = [candidate for candidate in _members(current) if _is_model(candidate)]
    return list(models[0].model_fields) if len(models) == 1 else []


def _step(annotation: Any, part: str | int) -> Any:
    """The type found one location part inside `annotation` (a model field, list item or dict value)."""
    for candidate in _members(annotation):
        if _is_model(candidate):
            info = candidate.model_fields.get(str(part))
            if info is not None:
                return info.annotation
            if part == candidate.__name__:  # pydantic names the union member an error is about
                return candidate
            continue
        origin, args = get_origin(candidate), get_args(candidate)
        if not (isinstance(origin, type) and args):
            continue
        if isinstance(part, int) and origin is tuple:  # tuple[X, ...] or tuple[X, Y]
            return args[0] if args[-1] is Ellipsis else (args[part] if part < len(args) else None)
        if isinstance(part, int) and issubclass(origin, Sequence | set | frozenset):
            return args[0]
        if issubclass(origin, Mapping):
            return args[-1]
    return None


def _members(annotation: Any) -> list[Any]:
    """`annotation` without Annotated[...] metadata, split into its members when it is a union."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


# --- a form's fields ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One validation error for a form: the top-level field it is about (`field`), a `code` the
    page words in its language (`validation.<code>` in core/locales) and that text's `fields`."""

    field: str
    code: str
    fields: dict[str, Any]


#: pydantic's error types -> (code, the error context's value the text needs, named as it is shown).
_FIELD_CODES: Mapping[str, tuple[str, str | None]] = {
    "missing": ("required", None),
    "string_too_short": ("required", None),
    "string_too_long": ("too_long", "max_length"),
    "too_long": ("too_many", "max_length"),
    "greater_than_equal": ("at_least", "ge"),
    "greater_than": ("more_than", "gt"),
    "less_than_equal": ("at_most", "le"),
    "less_than": ("less_than", "lt"),
}


#: The error types of the models' own validators (`PydanticCustomError`, core/personas.py): each
#: is its own code, and the error's context holds its text's fields.
OWN_CODES: frozenset[str] = frozenset({"one_line", "emoji", "avatar_image", "extensions_too_large"})

#: Every code `field_problems` gives.
FIELD_PROBLEM_CODES: frozenset[str] = frozenset(
    {code for code, _ in _FIELD_CODES.values()} | {"too_short", "invalid"} | OWN_CODES
)


def field_problems(exc: ValidationError) -> list[FieldProblem]:
    """Every error of `exc`, by the top-level field it is about, as a code and its values (a
    model's own validator keeps its message, `detail`, which says what it needs)."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        field = str(loc[0]) if loc else ""
        if error["type"] in OWN_CODES:
            problems.append(FieldProblem(field, error["type"], dict(error.get("ctx") or {})))
            continue
        code, context_key = _FIELD_CODES.get(error["type"], ("invalid", None))
        values: dict[str, Any] = {}
        if context_key is not None:
            values["limit"] = (error.get("ctx") or {}).get(context_key)
        if (
            code == "required"
            and error["type"] == "string_too_short"
            and (error.get("ctx") or {}).get("min_length", 1) > 1
        ):
            code, values = "too_short", {"limit": error["ctx"]["min_length"]}
        if code == "invalid":
            values["detail"] = str(error["msg"]).removeprefix("Value error, ")
        problems.append(FieldProblem(field, code, values))
    return problems


def field_limits(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """The smallest and largest value `model.name` accepts (its ge/gt and le/lt), for a number
    field that offers only what the validator takes."""
    low: float | None = None
    high: float | None = None
    for rule in model.model_fields[name].metadata:
        low = getattr(rule, "ge", None) if getattr(rule, "ge", None) is not None else low
        low = getattr(rule, "gt", None) if getattr(rule, "gt", None) is not None else low
        high = getattr(rule, "le", None) if getattr(rule, "le", None) is not None else high
        high = getattr(rule, "lt", None) if getattr(rule, "lt", None) is not None else high
    return low, high
