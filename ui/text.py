"""The pages' one way to put words on screen: this session's catalog (`tr`), notices from the
service, and text from users, models and files made safe for `st.markdown`."""

from __future__ import annotations

from contextvars import ContextVar

import streamlit as st

from core.compare.comparison import ErrorInfo
from core.errors import DashboardError
from core.i18n import Language, Translator, translator
from core.i18n import current as session_translator
from core.notices import Notice
from core.safe_markdown import page_markdown

#: The translator of the run in progress (a script run is one thread, one context), set where
#: the run decides its language (`ui.frame.page_language`): a page asks for some 70 strings a
#: run, and each lookup in the session state costs about as much as drawing a caption.
_RUN_TRANSLATOR: ContextVar[Translator] = ContextVar("run_translator")


def money(dollars: float | None) -> str:
    """A sum in dollars as every view shows it: four decimals, "< $0.0001" for a sum they would
    show as $0.0000, "$0" for none, "—" when unknown. A negative sum (caching that cost more than
    it saved) keeps its sign: "-$0.0012", "> -$0.0001"."""
    if dollars is None:
        return "—"
    if dollars == 0:
        return "$0"
    if abs(dollars) < 0.0001:
        return "< $0.0001" if dollars > 0 else "> -$0.0001"
    return f"{'-' if dollars < 0 else ''}${abs(dollars):,.4f}"


def use_language(language: Language) -> None:
    """This run's language, for `tr` (the session state keeps it for callbacks and fragments)."""
    _RUN_TRANSLATOR.set(translator(language))


def page_translator() -> Translator:
    """This run's translator; before its language is decided (a callback, a fragment's own
    rerun), the session's."""
    return _RUN_TRANSLATOR.get(None) or session_translator(st.session_state)


def tr(key: str, /, **fields: object) -> str:
    """This session's text for `key`, formatted with `fields` (catalogs: core/locales)."""
    return page_translator()(key, **fields)


def tr_plural(key: str, count: int, /, **fields: object) -> str:
    """`key.one` or `key.other` for `count` (also passed as the field `count`)."""
    return page_translator().plural(key, count, **fields)


def error_text(error: BaseException | ErrorInfo) -> str:
    """An error (or a comparison column's record of one) in the page's language: `error.<code>`
    with its fields (core/errors.py; a field that is a `Notice` in the page's language too), and
    what the server said, quoted as it said it. An error of no code reads as its English message."""
    if isinstance(error, ErrorInfo):
        code, message, fields = error.code, error.message, dict(error.fields)
    elif isinstance(error, DashboardError):
        code, message, fields = error.code, str(error), error.fields
    else:
        code, message, fields = "generic", str(error), {}
    text = tr(f"error.{code}", message=message, **{name: field_text(value) for name, value in fields.items()})
    if said := fields.get("server_said"):
        text += " " + tr("error.details.server_said", text=said)
    return text


def field_text(value: object) -> object:
    """A field of an error or notice as its text shows it: a notice (a reason, what is wrong with a
    URL) or an error in the page's language, and a list of them joined; anything else as it is."""
    if isinstance(value, Notice):
        return notice_text(value)
    if isinstance(value, BaseException):
        return error_text(value)
    if isinstance(value, list | tuple):
        return tr("error.details.separator").join(str(field_text(item)) for item in value)
    return value


def notice_text(notice: Notice) -> str:
    """A notice in the page's language; an error or notice among its fields in the page's language too."""
    return tr(notice.key, **{name: field_text(value) for name, value in notice.fields.items()})


def show_notice(notice: Notice, *, icon: str | None = None) -> None:
    """A notice as an alert of its level."""
    show = {"error": st.error, "warning": st.warning, "info": st.info, "success": st.success}[notice.level]
    show(as_markdown(notice_text(notice)), icon=icon)


def as_markdown(text: str) -> str:
    """Text from a user, a model, a file or a server for st.markdown or a label: no server path,
    images become links (never loaded from their server), and a `$` is a price, not the start of
    a LaTeX formula (`core.safe_markdown.page_markdown`)."""
    return page_markdown(text)
