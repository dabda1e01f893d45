"""What the application service tells a visitor besides a reply: a `Notice` with a code, its
fields and a level. Core never writes the sentence: the page shows `tr(notice.key, **notice.fields)`
from core/locales (`notice.<code>`), the same shape as errors (`error.<code>`)."""

from __future__ import annotations

from typing import Any, Literal

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
