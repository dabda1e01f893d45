"""The page's text in English and Simplified Chinese.

One catalog per language, a dict module in `core/locales/` (`en.py`, `zh_CN.py`): a key names a
string, the value is a `str.format` template (`"Deleted “{title}”."`). Both catalogs have the
same keys and the same `{fields}` per key (tests/test_i18n.py fails otherwise), so a lookup never
falls back: a missing key or field raises KeyError instead of showing the key.

Key scheme: dotted, `<area>.<thing>[.<aspect>]`, lower case with underscores, e.g.
`sidebar.api_key.help`; a string that depends on a count has `.one` and `.other` variants
(`Translator.plural`); a value from core (a message state, a gauge part) is looked up under a
key derived from it (`state.trimmed`, `gauge.part.system`).

No Streamlit here: the page decides the language (`language_for`) and asks a `Translator`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

from core.locales import en, zh_CN
from core.notices import Notice
from core.safe_markdown import shown_text

Language = Literal["en", "zh-CN"]
#: Each language by its own name, as the language switch lists them.
LANGUAGES: dict[Language, str] = {"en": "English", "zh-CN": "简体中文"}
DEFAULT_LANGUAGE: Language = "en"
CATALOGS: Mapping[Language, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(en.CATALOG), "zh-CN": MappingProxyType(zh_CN.CATALOG)}
)
#: The query parameter that forces a language (`?lang=zh-CN`).
LANGUAGE_PARAM = "lang"
#: The session-state key holding the language the page is shown in (set on every run).
LANGUAGE_STATE = "language"


def parse_language(tag: str | None) -> Language | None:
    """The catalog language for a language tag (`zh-CN`, `zh_cn`, `zh-Hant-TW`, `en-GB`, `EN`), or
    None for an empty or unknown one. Any Chinese gets Simplified Chinese, the only Chinese there
    is (a zh-TW or zh-HK reader gets Simplified, not English); any English gets English."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def language_for(query_param: str | None, chosen: str | None, browser_locale: str | None) -> Language:
    """The page's language: the `?lang=` query parameter, else the sidebar choice, else the
    browser's locale (`st.context.locale`); a value that names no catalog language is skipped.
    An unknown browser locale (fr-FR) gets English."""
    for candidate in (query_param, chosen):
        language = parse_language(candidate)
        if language is not None:
            return language
    return "zh-CN" if parse_language(browser_locale) == "zh-CN" else DEFAULT_LANGUAGE


def template_fields(template: str) -> frozenset[str]:
    """The `{fields}` a template formats (`"{count:,} of {budget}"` -> count, budget)."""
    return frozenset(
        field.split(".", 1)[0].split("[", 1)[0]
        for _, field, _, _ in string.Formatter().parse(template)
        if field is not None
    )


class Translator:
    """`tr("key", **fields)`: the catalog's template for `key` in `language`, formatted; a field
    that quotes input (a title, an error, a URL) cannot make the text load an image or show a
    server path."""

    def __init__(self, language: Language, catalog: Mapping[str, str] | None = None) -> None:
        self.language = language
        self.catalog = CATALOGS[language] if catalog is None else catalog

    def __call__(self, key: str, /, **fields: object) -> str:
        try:
            template = self.catalog[key]
        except KeyError:
            raise KeyError(f"no {self.language} text for the key {key!r} (core/locales)") from None
        try:
            return shown_text(template.format(**fields))
        except KeyError as missing:
            raise KeyError(f"the {self.language} text for {key!r} needs the field {missing}") from None

    def plural(self, key: str, count: int, /, **fields: object) -> str:
        """`key.one` when `count` is 1, else `key.other`; `count` is passed as a field too."""
        return self(f"{key}.{'one' if count == 1 else 'other'}", count=count, **fields)

    def __repr__(self) -> str:
        return f"Translator({self.language!r})"


@cache
def translator(language: Language) -> Translator:
    """The shared translator of a language."""
    return Translator(language)


def current(state: Mapping[Any, Any]) -> Translator:
    """The translator of the language a session's page is shown in (`state[LANGUAGE_STATE]`,
    English before the page has set it)."""
    return translator(parse_language(state.get(LANGUAGE_STATE)) or DEFAULT_LANGUAGE)


def english(notice: Notice) -> str:
    """A notice in English, a notice among its fields too and a list of them joined: for the
    command line, logs and str() of an error that carries notices, so as written (a page's
    `Translator` also takes server paths out)."""
    catalog = CATALOGS["en"]

    def field(value: object) -> object:
        if isinstance(value, Notice):
            return english(value)
        if isinstance(value, list | tuple):
            return catalog["error.details.separator"].join(str(field(item)) for item in value)
        return value

    return catalog[notice.key].format(**{name: field(value) for name, value in notice.fields.items()})
