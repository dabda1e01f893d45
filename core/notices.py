"""What the application service tells a visitor besides a reply: a `Notice` with a code, its
fields and a level. Core never writes the sentence: the page shows `tr(notice.key, **notice.fields)`
from core/locales (`notice.<code>`), the same shape as errors (`error.<code>`)."""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

Level = Literal["info", "success", "warning", "error"]


class Notice(BaseModel):
    """`Notice(code="imported", level="success", fields={"count": 4, ...})`."""

    model_config = ConfigDict(frozen=True)

    code: str
    level: Level = "info"
    fields: dict[str, Any] = {}

    @property
    def key(self) -> str:
        """The catalog key of its text."""
        return f"notice.{self.code}"


def error_notice(code: str, error: Exception, **fields: Any) -> Notice:
    """A failure to report: `code`'s text with the error itself as the field `error` (the page
    writes it in its language, from its code and fields)."""
    return Notice(code=code, level="error", fields={**fields, "error": error})


#: Python's JSON parser's messages (`json.JSONDecodeError.msg`) as notices the page words.
_JSON_PROBLEMS: Final = {
    "Expecting value": Notice(code="json_expecting_value"),
    "Expecting property name enclosed in double quotes": Notice(code="json_expecting_name"),
    "Expecting ':' delimiter": Notice(code="json_expecting_colon"),
    "Expecting ',' delimiter": Notice(code="json_expecting_comma"),
    "Unterminated string starting at": Notice(code="json_unterminated_string"),
    "Invalid control character at": Notice(code="json_control_character"),
    "Extra data": Notice(code="json_extra_data"),
    "Invalid \\uXXXX escape": Notice(code="json_bad_unicode_escape"),
}


def json_problem(error: json.JSONDecodeError) -> Notice | str:
    """What the JSON parser found wrong, for a notice's field (the parser's own English when it
    is none of the messages known here)."""
    if error.msg.startswith("Invalid \\escape"):
        return Notice(code="json_bad_escape")
    return _JSON_PROBLEMS.get(error.msg, error.msg)
