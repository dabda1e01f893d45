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

from core.notices import Notice

__all__ = [
    "FieldProblem",
    "LineOf",
    "describe_problems",
    "describe_validation_error",
    "describe_value",
    "field_limits",
    "field_path",
    "field_problems",
    "problem_notices",
]

#: `line_of(loc, want_key)`: the line an error location points at, or None when unknown. `want_key`
#: asks for the line of the key itself (an unknown field) rather than of its value.
LineOf = Callable[[tuple[str | int, ...], bool], int | None]

_KEY_ERRORS = {"extra_forbidden", "invalid_key"}


#: pydantic's error types whose message the catalogs word (`notice.pydantic_<type>`, the English as
#: pydantic writes it); a type with a length gives `_one` when the length is 1. Others keep
#: pydantic's English message.
_PYDANTIC_NOTICES: Mapping[str, Notice] = {
    "string_type": Notice(code="pydantic_string_type"),
    "int_type": Notice(code="pydantic_int_type"),
    "float_type": Notice(code="pydantic_float_type"),
    "list_type": Notice(code="pydantic_list_type"),
    "dict_type": Notice(code="pydantic_dict_type"),
    "bool_type": Notice(code="pydantic_bool_type"),
    "model_type": Notice(code="pydantic_model_type"),
    "int_from_float": Notice(code="pydantic_int_from_float"),
    "finite_number": Notice(code="pydantic_finite_number"),
    "literal_error": Notice(code="pydantic_literal_error"),
    "string_pattern_mismatch": Notice(code="pydantic_string_pattern_mismatch"),
    "string_too_short": Notice(code="pydantic_string_too_short"),
    "string_too_short_one": Notice(code="pydantic_string_too_short_one"),
    "string_too_long": Notice(code="pydantic_string_too_long"),
    "string_too_long_one": Notice(code="pydantic_string_too_long_one"),
    "too_short": Notice(code="pydantic_too_short"),
    "too_short_one": Notice(code="pydantic_too_short_one"),
    "too_long": Notice(code="pydantic_too_long"),
    "too_long_one": Notice(code="pydantic_too_long_one"),
    "greater_than_equal": Notice(code="pydantic_greater_than_equal"),
    "less_than_equal": Notice(code="pydantic_less_than_equal"),
    "greater_than": Notice(code="pydantic_greater_than"),
    "less_than": Notice(code="pydantic_less_than"),
}
_LENGTHS = ("min_length", "max_length")


def _pydantic_problem(error: Any) -> str | Notice:
    """What pydantic said about one error, as a notice where the catalogs word its type."""
    context = dict(error.get("ctx") or {})
    kind = error["type"]
    if kind in ("too_long", "too_short") and context.get("field_type") != "List":
        return str(error["msg"])
    if any(context.get(length) == 1 for length in _LENGTHS) and f"{kind}_one" in _PYDANTIC_NOTICES:
        kind = f"{kind}_one"
    known = _PYDANTIC_NOTICES.get(kind)
    if known is None:
        return str(error["msg"])
    context.pop("field_type", None)
    context.pop("expected_plural", None)
    # As pydantic writes them: a whole float without ".0".
    shown = {key: int(v) if isinstance(v, float) and v.is_integer() else v for key, v in context.items()}
    return Notice(code=known.code, fields={key: str(value) for key, value in shown.items()})


def _own_problem(error: Any) -> str | Notice:
    """A model's own validator's message: a notice for the types of OWN_CODES."""
    own = _OWN_NOTICES.get(error["type"])
    if own is not None:
        return Notice(code=own.code, fields=dict(error.get("ctx") or {}))
    return str(error["msg"]).removeprefix("Value error, ")


def problem_notices(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    line_of: LineOf | None = None,
    unknown_hints: Mapping[str, str | Notice] | None = None,
    max_shown: int = 10,
) -> list[Notice]:
    """One notice per error of `exc` (at most `max_shown`, then "and N more problems"), for a
    page to word in its language (`describe_problems` is their English).

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
        path: str | Notice = field_path(loc) or Notice(code="validation_top_level")
        if kind == "extra_forbidden":
            name, parent = str(loc[-1]), loc[:-1]
            parts: dict[str, str | Notice] = {"where": "", "hint": "", "suggestion": "", "allowed": ""}
            if parent:
                parts["where"] = Notice(code="validation_in", fields={"parent": field_path(parent)})
            if unknown_hints and field_path(loc) in unknown_hints:
                parts["hint"] = Notice(
                    code="validation_hint", fields={"hint": unknown_hints[field_path(loc)]}
                )
            else:
                allowed = _allowed_fields(model, parent)
                close = difflib.get_close_matches(name, allowed, n=1)
                if close:
                    parts["suggestion"] = Notice(code="validation_did_you_mean", fields={"name": close[0]})
                if allowed and parent not in listed:
                    listed.add(parent)
                    parts["allowed"] = Notice(
                        code="validation_allowed", fields={"fields": ", ".join(allowed)}
                    )
            problem = Notice(code="validation_unknown", fields={"name": name, **parts})
        elif kind == "missing":
            problem = Notice(code="validation_missing", fields={"path": path})
        elif kind == "invalid_key":
            where = (
                Notice(code="validation_in", fields={"parent": field_path(loc[:-1])}) if len(loc) > 1 else ""
            )
            problem = Notice(
                code="validation_invalid_key", fields={"key": describe_value(loc[-1]), "where": where}
            )
        elif kind == "value_error" or kind in OWN_CODES:  # a model's own validator: it words the value
            problem = Notice(code="validation_own", fields={"path": path, "problem": _own_problem(error)})
        else:
            problem = Notice(
                code="validation_field",
                fields={
                    "path": path,
                    "problem": _pydantic_problem(error),
                    "value": describe_value(error["input"]),
                },
            )
        line = line_of(loc, kind in _KEY_ERRORS) if line_of is not None else None
        problems.append(
            Notice(code="validation_line", fields={"line": line, "problem": problem})
            if line is not None
            else problem
        )
    hidden = len(errors) - max_shown
    if hidden == 1:
        problems.append(Notice(code="validation_more_one"))
    elif hidden > 1:
        problems.append(Notice(code="validation_more", fields={"count": hidden}))
    return problems


def describe_problems(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    line_of: LineOf | None = None,
    unknown_hints: Mapping[str, str | Notice] | None = None,
    max_shown: int = 10,
) -> list[str]:
    """`problem_notices` in English: one sentence per error (loaders' messages, logs)."""
    from core.i18n import english  # the catalogs import nothing of this module's users

    notices = problem_notices(
        exc, model=model, line_of=line_of, unknown_hints=unknown_hints, max_shown=max_shown
    )
    return [english(notice) for notice in notices]


def describe_validation_error(
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    line_of: LineOf | None = None,
    unknown_hints: Mapping[str, str | Notice] | None = None,
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


#: The error types of the models' own validators (`PydanticCustomError`, core/personas/persona.py): each
#: is its own code, and the error's context holds its text's fields.
_OWN_NOTICES: Mapping[str, Notice] = {
    "one_line": Notice(code="validation_one_line"),
    "emoji": Notice(code="validation_emoji"),
    "avatar_image": Notice(code="validation_avatar_image"),
    "extensions_too_large": Notice(code="validation_extensions_too_large"),
}
OWN_CODES: frozenset[str] = frozenset(_OWN_NOTICES)

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
