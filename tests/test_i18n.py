"""The interface in English and Simplified Chinese: the catalogs agree, every key the page uses
exists, the language follows `?lang=`, the sidebar choice and the browser, in that order."""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from streamlit.testing.v1 import AppTest

from core.charts import SERIES, TRIM_TOOLTIP, TRIMS, ComparisonChartTexts
from core.chat.conversation import MessageState, SummaryVersion
from core.chat.prompt_cache import CACHE_RULES
from core.chat.settings import POLICY_NAMES
from core.compare.comparison import PickOutcome
from core.compare.leaderboard import VOTE_SCOPES
from core.i18n import (
    CATALOGS,
    LANGUAGES,
    Translator,
    current,
    language_for,
    parse_language,
    template_fields,
    translator,
)
from core.locales import en, zh_CN
from core.personas.formats import EXPORT_FORMATS
from core.providers.connection import KeySource
from core.stats import ContextGauge
from core.validation import FIELD_PROBLEM_CODES
from tests.apptest import conversation_list, open_settings
from tests.conftest import APP_PATH, REPO_ROOT
from ui.compare_view import MODES as COMPARE_MODES
from ui.compare_view import NAMED_STATES
from ui.leaderboard_view import SETTING_WORDS
from ui.personas_view import EDITOR_LABELS
from ui.testsets_view import OTHER_VOTES

#: The page, its views, and the core modules that write text the page shows (with a translator
#: called `text`: chart titles, the offline model's reply).
SOURCES = [
    REPO_ROOT / "streamlit_app.py",
    *sorted((REPO_ROOT / "ui").glob("*.py")),
    *sorted((REPO_ROOT / "app_pages").glob("*.py")),
    REPO_ROOT / "core" / "charts.py",
    REPO_ROOT / "core" / "providers" / "offline.py",
]
#: `tr("key"`, `tr_plural("key"`, `text("key"` and `text.plural("key"` with a literal key (either
#: quote, inside f-strings too).
LITERAL_KEY = re.compile(r"""\b(?:tr|text)(_plural|\.plural)?\(\s*["']([^"'{}]+)["']""")
#: `tr(f"prefix.{value}"`: a key family derived from a value (of core, or of the page's VIEWS).
DERIVED_KEY = re.compile(r"""\b(?:tr|text)(?:_plural|\.plural)?\(\s*f["']([^"'{]*)\{""")


def page_views() -> set[str]:
    """The views: one page file each in app_pages/ (the navigation's titles are `views.<name>`)."""
    views = {path.stem for path in (REPO_ROOT / "app_pages").glob("*.py")}
    assert views, "no pages in app_pages/"
    return views


#: Families of keys derived from values of core, and every value each can take.
DERIVED_FAMILIES = {
    "personas.export.": set(EXPORT_FORMATS),
    "state.": {state.value for state in MessageState},
    "gauge.part.": {part for part, _ in ContextGauge(1, system=0, pinned=0, history=0, newest=0).parts()},
    "views.": page_views(),
    "connection.key_source.": {*get_args(KeySource), "none"},
    "policy.": set(POLICY_NAMES),
    "summary.source.": set(get_args(SummaryVersion.model_fields["source"].annotation)),
    "chart.series.": {series for series, _ in SERIES.values()} | {TRIMS[0]},
    "chart.trim.": {field for field, _, _ in TRIM_TOOLTIP},
    "offline.reply.role.": {"user", "assistant"},
    "chart.compare.": set(ComparisonChartTexts.__dataclass_fields__),
    "error.": set(),  # error codes: checked by test_every_error_code_has_its_text
    "whatif.cache_rule.": {*CACHE_RULES, "none"},
    "compare.mode.": set(COMPARE_MODES),
    "compare.vote.": set(OTHER_VOTES),
    "compare.vote.done_": set(get_args(PickOutcome)),
    "compare.state.": set(NAMED_STATES),
    "leaderboard.scope.": {*VOTE_SCOPES, "label", "help"},
    "leaderboard.setting.": set(SETTING_WORDS.values()),
    "personas.editor.": set(EDITOR_LABELS.values()),
    "validation.": set(FIELD_PROBLEM_CODES),
}


def sample(field: str) -> Any:
    """A value every template's use of `field` formats (numbers, a date, or text)."""
    if field in {"updated", "at"}:
        return datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    numbers = {"count", "budget", "reply_cap", "used", "drops", "status", "seconds", "cost", "fraction"}
    numbers |= {"length", "limit", "chars", "pinned", "overflow", "api", "round", "share", "offset", "size"}
    if field in numbers | {"tokens", "turn", "number", "error", "turns", "window", "setting"}:
        return 1234
    return f"<{field}>"


def used_keys() -> Iterator[tuple[str, str]]:
    """(source file, key) for every literal key the page looks up."""
    for path in SOURCES:
        for plural, key in LITERAL_KEY.findall(path.read_text(encoding="utf-8")):
            if plural:
                yield path.name, f"{key}.one"
                yield path.name, f"{key}.other"
            else:
                yield path.name, key


# --- catalogs ------------------------------------------------------------------------------------


def test_both_catalogs_have_the_same_keys():
    assert set(CATALOGS) == set(LANGUAGES) == {"en", "zh-CN"}
    assert sorted(set(en.CATALOG) - set(zh_CN.CATALOG)) == [], "missing in zh_CN.py"
    assert sorted(set(zh_CN.CATALOG) - set(en.CATALOG)) == [], "missing in en.py"


@pytest.mark.parametrize("key", sorted(en.CATALOG))
def test_each_key_has_the_same_fields_in_both_languages(key):
    assert template_fields(en.CATALOG[key]) == template_fields(zh_CN.CATALOG[key])


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_catalog_key_formats(language):
    """Walk every key: each formats with its own fields and says something."""
    tr = Translator(language)
    for key, template in CATALOGS[language].items():
        text = tr(key, **{field: sample(field) for field in template_fields(template)})
        assert text.strip(), key
        assert "{" not in text and "}" not in text, (key, text)


def test_the_chinese_catalog_is_chinese():
    """Not a copy of the English: every entry but the names kept as they are has Chinese in it."""
    # "HTTP {status}", a numbered title, a quoted snippet: no words of their own to translate.
    kept = {"error.details.status", "conversations.item.numbered", "conversations.item.match"}
    kept |= {"validation.invalid", "error.persona_file"}  # "{label}：{detail}", "{file}：{problems}"
    kept |= {
        "error.details.separator",
        "notice.validation_hint",
        "notice.validation_own",
    }  # "；", "：{hint}", "{path}：{problem}"
    han = re.compile(r"[\u4e00-\u9fff]")
    assert [k for k, text in zh_CN.CATALOG.items() if k not in kept and not han.search(text)] == []


def test_every_key_the_page_uses_exists():
    used = list(used_keys())
    assert len(used) > 100, "the pattern found too few tr() calls"
    assert [(source, key) for source, key in used if key not in en.CATALOG] == []


def test_every_key_derived_from_a_value_of_core_exists():
    """`tr(f"state.{...}")` and the like: every value the family can take has a key."""
    prefixes = {m for path in SOURCES for m in DERIVED_KEY.findall(path.read_text(encoding="utf-8"))}
    assert prefixes <= set(DERIVED_FAMILIES), f"add the new family to DERIVED_FAMILIES: {prefixes}"
    for prefix in prefixes:
        assert [v for v in DERIVED_FAMILIES[prefix] if f"{prefix}{v}" not in en.CATALOG] == [], prefix


#: A notice's code where core or the page makes one: `Notice(code="x"` or `error_notice("x"`.
NOTICE_CODE = re.compile(r"""(?:\bcode=|\berror_notice\()\s*["']([a-z0-9_]+)["']""")
NOTICE_SOURCES = [*sorted((REPO_ROOT / "core").rglob("*.py")), *SOURCES]


def notice_keys() -> set[str]:
    """`notice.<code>` for every notice made (the page shows `tr(notice.key, **notice.fields)`)."""
    return {
        f"notice.{code}"
        for path in NOTICE_SOURCES
        for code in NOTICE_CODE.findall(path.read_text(encoding="utf-8"))
    }


def test_every_notice_has_its_text():
    keys = notice_keys()
    assert {"notice.imported", "notice.open_failed"} <= keys, "the pattern found too few notices"
    assert sorted(keys - set(en.CATALOG)) == []


def code_values(node: ast.expr, assigned: dict[str, set[str]], where: str) -> set[str]:
    """The strings an error code expression can be: a literal, either side of `a if ... else b`,
    what the module assigned to the variable it names, or any value of the dict of literals it
    looks up (`CODES[setting]`)."""
    if isinstance(node, ast.Constant):
        return {str(node.value)}
    if isinstance(node, ast.IfExp):
        return code_values(node.body, assigned, where) | code_values(node.orelse, assigned, where)
    if isinstance(node, ast.Name):
        return assigned.get(node.id, set())
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in assigned:
        return assigned[node.value.id]
    raise AssertionError(f"{where}:{node.lineno}: an error code this test cannot read")


def error_codes() -> set[str]:
    """Every code core gives an error (`.coded(...)` in core/**/*.py)."""
    codes = {"generic"}
    for path in sorted((REPO_ROOT / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict):
                        values = [v.value for v in node.value.values if isinstance(v, ast.Constant)]
                        if len(values) == len(node.value.values):
                            assigned[target.id] = {str(value) for value in values}
                        continue
                    pairs = (
                        zip(target.elts, node.value.elts, strict=False)
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                        else [(target, node.value)]
                    )
                    for name, value in pairs:
                        if isinstance(name, ast.Name) and isinstance(value, ast.Constant):
                            assigned.setdefault(name.id, set()).add(str(value.value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "coded" and node.args:
                codes |= code_values(node.args[0], assigned, path.name)
    return codes


def test_every_error_code_has_its_text():
    codes = error_codes()
    assert {"auth_failed", "prompt_too_long_pinned", "no_quota", "empty_reply_length"} <= codes
    assert sorted(f"error.{code}" for code in codes if f"error.{code}" not in en.CATALOG) == []


def test_every_catalog_key_is_used():
    used = {key for _, key in used_keys()} | notice_keys() | {f"error.{code}" for code in error_codes()}
    prefixes = {m for path in SOURCES for m in DERIVED_KEY.findall(path.read_text(encoding="utf-8"))}
    derived = {f"{prefix}{value}" for prefix in prefixes for value in DERIVED_FAMILIES[prefix]}
    assert sorted(set(en.CATALOG) - used - derived) == []


# --- translator ----------------------------------------------------------------------------------


def test_translator_formats_fields():
    assert translator("en")("conversations.deleted", title="Trip") == "Deleted “Trip”."
    assert translator("zh-CN")("conversations.deleted", title="旅行") == "已删除“旅行”。"
    assert translator("en")("chat.show_earlier.label", count=1200) == "Show 1,200 earlier messages"


def test_a_missing_key_or_field_raises_instead_of_showing_the_key():
    with pytest.raises(KeyError, match=r"no\.such\.key"):
        translator("zh-CN")("no.such.key")
    with pytest.raises(KeyError, match="title"):
        translator("en")("conversations.deleted")


def test_plural_picks_one_or_other():
    tr = translator("en")
    assert tr.plural("personas.card.conversations", 1) == "1 conversation"
    assert tr.plural("personas.card.conversations", 2) == "2 conversations"
    assert translator("zh-CN").plural("personas.card.conversations", 2) == "2 个对话"


def test_current_reads_the_session_language():
    assert current({}).language == "en"
    assert current({"language": "zh-CN"}).language == "zh-CN"
    assert current({"language": "klingon"}).language == "en"


# --- which language --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("zh-CN", "zh-CN"),
        ("zh_cn", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-TW", "zh-CN"),  # Simplified is the only Chinese there is
        ("zh-HK", "zh-CN"),
        ("zh-Hant-TW", "zh-CN"),
        ("en", "en"),
        ("en-GB", "en"),
        ("EN", "en"),
        ("fr-FR", None),
        ("", None),
        (None, None),
        ("zhx", None),
    ],
)
def test_parse_language(tag, language):
    assert parse_language(tag) == language


def test_query_parameter_wins_over_choice_and_browser():
    assert language_for("zh-CN", "en", "en-US") == "zh-CN"
    assert language_for("en", "zh-CN", "zh-CN") == "en"


def test_sidebar_choice_wins_over_browser():
    assert language_for(None, "zh-CN", "en-US") == "zh-CN"
    assert language_for(None, "en", "zh-CN") == "en"


def test_browser_locale_decides_otherwise():
    assert language_for(None, None, "zh-CN") == "zh-CN"
    assert language_for(None, None, "zh-TW") == "zh-CN"
    assert language_for(None, None, "en-US") == "en"
    assert language_for(None, None, "de-DE") == "en"
    assert language_for(None, None, None) == "en"


def test_an_unknown_query_parameter_or_choice_is_skipped():
    assert language_for("fr", None, "zh-CN") == "zh-CN"
    assert language_for("", "zh-CN", "en") == "zh-CN"
    assert language_for("xx", "yy", None) == "en"


# --- the page in Chinese ---------------------------------------------------------------------------

#: English a Chinese page may show: names of formats, products and protocols, the switch's own
#: "English", and "token", the term Chinese LLM products use as it is.
ALLOWED_WORDS = {
    "API", "URL", "JSON", "YAML", "Markdown", "OpenAI", "Azure", "Ollama", "vLLM", "Studio",
    "token", "tokens", "English", "UTC", "HTTP", "tiktoken",
    "PNG", "charx", "LobeHub", "NextChat", "Open", "WebUI", "LibreChat", "modelSpecs",
    "Bradley", "Terry",  # a method named for its authors
    "Chatbot", "Arena",  # a leaderboard's name
    "SQLite", "PostgreSQL",
}  # fmt: skip
#: Code-like tokens: identifiers, file and folder names, URLs, model ids (a digit, `_`, `.`, `/`, `:`).
CODE_LIKE = re.compile(r"[A-Za-z0-9_]+(?:[-./:]+[A-Za-z0-9_]+)+/?|\w*[0-9_]\w*|[A-Za-z]+/")
TEXT_ELEMENTS = {"markdown", "caption", "header", "subheader", "title", "info", "success", "warning", "error"}


def shown_texts(block: Any) -> Iterator[str]:
    """Every label, help, placeholder and text of the elements under `block` (not typed values,
    persona content is checked by the caller)."""
    for node in block:
        kind = getattr(node, "type", "")
        if kind in TEXT_ELEMENTS:
            yield str(node.value)
        for name in ("label", "help", "placeholder"):
            text = getattr(node.proto, name, None) if hasattr(node, "proto") else None
            if isinstance(text, str) and text:
                yield text
        if kind == "expandable":
            yield node.proto.expandable.label


def english_words(text: str) -> list[str]:
    text = re.sub(r"`[^`]*`", " ", text)  # code spans: ids, model names
    text = CODE_LIKE.sub(" ", text)
    return [w for w in re.findall(r"[A-Za-z]{3,}", text) if w not in ALLOWED_WORDS]


def zh_page(clean_env: pytest.MonkeyPatch, **context: str) -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.query_params["lang"] = "zh-CN"
    if context:
        at.context = context
    at.run()
    assert not at.exception, at.exception
    return at


def test_english_words_finds_english_and_passes_names():
    assert english_words("已连接到 **api.openai.com**（密钥在此输入）。") == []
    assert english_words("上下文预算（提示词 token 数）· gpt-4o-mini · OPENAI_API_KEY · llama.cpp") == []
    assert english_words("Persona 角色") == ["Persona"]
    assert english_words("Deleted.") == ["Deleted"]
    assert english_words("与 personas/ 中的文件") == []


def test_lang_zh_cn_shows_no_english_label_in_the_sidebar(start_app):
    start_app()  # the environment of every page test: offline, its own database
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.query_params["lang"] = "zh-CN"
    open_settings(at.run())  # their fields too
    assert not at.exception, at.exception
    texts = list(shown_texts(at.sidebar))
    assert "角色" in texts and "连接" in texts and "🌐 语言" in texts
    assert {t: words for t in texts if (words := english_words(t))} == {}
    assert at.selectbox(key="lang").value == "zh-CN"


def test_lang_zh_cn_translates_the_first_screen(clean_env):
    at = zh_page(clean_env)
    texts = list(shown_texts(at.main))
    assert any(t.startswith("从左到右：1 系统提示") for t in texts)
    assert [m.label for m in at.metric] == ["下一次调用发送", "token 用量", "费用"]
    assert at.chat_input(key="chat_input").placeholder == "给 美食家 发消息…"
    assert {t: words for t in texts if (words := english_words(t))} == {}


def test_badges_and_the_dashboard_follow_the_language(clean_env):
    at = zh_page(clean_env)
    at.chat_input(key="chat_input").set_value("北京烤鸭怎么吃？").run()
    at.button(key="regenerate").click().run()
    assert not at.exception, at.exception
    markdown = [m.value for m in at.markdown]
    assert ":gray-badge[已重新生成 · 不在上下文中]" in markdown
    assert any("🔌 离线模型" in c.value for c in at.caption)
    lines = [line for c in at.caption for line in c.value.split("  \n")]  # a caption's notes
    assert any(line.startswith("上下文中有 3 条消息。") for line in lines)


def test_the_browser_locale_picks_chinese_and_the_query_parameter_wins(clean_env):
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.context = {"locale": "zh-TW"}
    at.run()
    assert at.session_state.language == "zh-CN"
    assert at.selectbox(key="persona_id").label == "角色"
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.context = {"locale": "zh-CN"}
    at.query_params["lang"] = "en"
    at.run()
    assert at.selectbox(key="persona_id").label == "Persona"


def test_the_language_switch(app):
    """English without a locale (AppTest's default); the switch in the sidebar's settings changes
    the page and the link, and switches back."""
    switch = open_settings(app).selectbox(key="lang")
    assert (switch.label, switch.value, switch.options) == ("🌐 Language", "en", ["English", "简体中文"])
    assert conversation_list(app).options[0] == "🆕 New conversation"
    switch.select("zh-CN").run()
    assert not app.exception, app.exception
    assert app.session_state.language == "zh-CN"
    assert app.query_params["lang"] == "zh-CN"
    assert conversation_list(app).options[0] == "🆕 新对话"
    assert app.selectbox(key="persona_id").label == "角色" and app.selectbox(key="lang").label == "🌐 语言"
    app.selectbox(key="lang").select("en").run()
    assert conversation_list(app).options[0] == "🆕 New conversation"
    assert app.query_params["lang"] == "en"


def test_the_page_lang_follows_the_language(app):
    """Streamlit serves <html lang="en">; a tiny script in the sidebar says the language shown
    (checked in Chromium: it runs without errors and adds no gap). English alone needs none."""
    assert not app.sidebar.get("html")
    open_settings(app).selectbox(key="lang").select("zh-CN").run()
    (script,) = app.sidebar.get("html")
    assert script.proto.body == '<script>document.documentElement.lang = "zh-CN";</script>'
    assert script.proto.unsafe_allow_javascript
    app.run()  # said once: the attribute stays
    assert not app.sidebar.get("html")
    app.selectbox(key="lang").select("en").run()  # back to English: the attribute must follow
    assert app.sidebar.get("html")[0].proto.body == '<script>document.documentElement.lang = "en";</script>'


def test_the_persona_gallery_and_editor_in_chinese(clean_env):
    at = zh_page(clean_env)
    at.switch_page("app_pages/personas.py").run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "角色"
    captions = "\n".join(c.value for c in at.caption)
    assert "`gpt-4o-mini` · 预算 1,024 · 回复上限 250" in captions and "标签：美食 · 中文" in captions
    assert "内置 · 0 个对话" in captions
    next(b for b in at.button if b.label == "新建角色").click().run()
    assert not at.exception, at.exception
    labels = [w.label for w in [*at.text_input, *at.text_area, *at.number_input]]
    assert "名称" in labels and "系统提示词（每次调用都最先发送）" in labels
    texts = list(shown_texts(at.main))
    assert {t: words for t in texts if (words := english_words(t))} == {}


def chart_texts(at: AppTest) -> Iterator[str]:
    """The titles and notes of every chart on the page (axis, legend, tooltip)."""
    import json

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("title", "note") and isinstance(value, str):
                    yield value
                elif key != "datasets":
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for chart in at.get("vega_lite_chart"):
        yield from walk(json.loads(chart.proto.spec))


def persona_content() -> list[str]:
    """What the shipped personas' authors wrote (names, descriptions, tags, starters, greetings):
    content, shown as written whatever the page's language, longest first."""
    from core.personas.persona import BUNDLED_PERSONAS_DIR, load_personas

    written = []
    for persona in load_personas(BUNDLED_PERSONAS_DIR).personas.values():
        written += [persona.name, persona.description, *persona.tags, *persona.starter_prompts]
        written += [persona.greeting or ""]
    return sorted((text for text in written if text), key=len, reverse=True)


def english_shown(at: AppTest) -> dict[str, list[str]]:
    """Every English word the page shows (sidebar, main area, charts), by the text it is in,
    leaving out what persona authors wrote and what the visitor typed."""
    content = persona_content()
    found = {}
    for text in [*shown_texts(at.sidebar), *shown_texts(at.main), *chart_texts(at)]:
        stripped = text
        for written in content:
            stripped = stripped.replace(written, " ")
        if words := english_words(stripped):
            found[text] = words
    return found


def test_every_view_under_lang_zh_cn_shows_no_english(clean_env):
    """Walk every view in Chinese, with a conversation that has answers, trims and charts: no
    English word anywhere but the names of models, personas, formats and units."""
    at = zh_page(clean_env)
    for question in ("北京烤鸭怎么吃？", "还有呢？", "火锅呢？", "饺子呢？"):
        at.chat_input(key="chat_input").set_value(question).run()
        assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 2
    seen = {"chat": english_shown(at)}
    at.switch_page("app_pages/personas.py").run()
    seen["personas"] = english_shown(at)
    next(b for b in at.button if b.label == "新建角色").click().run()
    seen["editor"] = english_shown(at)
    at.switch_page("app_pages/compare.py").run()
    seen["compare"] = english_shown(at)
    next(b for b in at.button if b.label == "开始对比").click().run()
    at.chat_input(key="compare_input").set_value("你好").run()
    assert at.session_state.service.comparison.wait(30)
    at.run()  # what the columns' fragment asks for when the last one ends
    assert not at.exception, at.exception
    assert at.get("vega_lite_chart")
    seen["comparison"] = english_shown(at)
    # Last: AppTest formats the what-if view's select boxes outside the page's run (in English),
    # so leaving it would fail on AppTest's side, not the page's.
    at.switch_page("app_pages/whatif.py").run()
    assert not at.exception, at.exception
    seen["whatif"] = english_shown(at)
    assert {view: found for view, found in seen.items() if found} == {}


# --- core's errors and notices in Chinese (error.<code>, notice.<code>, validation.<code>) -------


def zh_app(clean_env: pytest.MonkeyPatch, **env: str) -> AppTest:
    """The page in Chinese with these deployer settings."""
    for name, value in env.items():
        clean_env.setenv(name, value)
    return zh_page(clean_env)


def only_chinese(texts: list[str], *quoted: str) -> list[str]:
    """`texts`, each checked to say nothing in English but names of settings, formats and units,
    and the `quoted` values the visitor or deployer wrote."""
    assert texts, "nothing shown"
    unquoted = {text: functools.reduce(lambda t, q: t.replace(q, " "), quoted, text) for text in texts}
    assert {text: words for text, rest in unquoted.items() if (words := english_words(rest))} == {}
    return texts


@pytest.mark.parametrize(
    ("setting", "value", "shown"),
    [
        ("MAX_REPLY_CAP", "-5", "设置 MAX_REPLY_CAP 必须是不小于 1 的整数，而不是“-5”。"),
        ("MAX_CONTEXT_BUDGET", "0", "设置 MAX_CONTEXT_BUDGET 必须在 1 到 2000000 之间，而不是 0。"),
        ("ALLOWED_MODELS", "gpt 4", "ALLOWED_MODELS：“gpt 4”不是模型名称。"),
        ("ACCESS_MODE", "x1", "设置 ACCESS_MODE 必须是 single-user, private 之一，而不是“x1”。"),
        ("OPENAI_TIMEOUT_S", "-1", "设置 OPENAI_TIMEOUT_S 必须是不小于 0 的数字，而不是“-1”。"),
        ("ALLOWED_BASE_URLS", "ftp://x1", "ALLOWED_BASE_URLS：“ftp://x1”不是可用的基础 URL（必须以"),
    ],
)
def test_a_malformed_deployer_setting_reads_in_chinese(clean_env, setting, value, shown):
    """A ConfigError stops the page with its text in the page's language."""
    for name, setting_value in {"ACCESS_MODE": "private", setting: value}.items():
        clean_env.setenv(name, setting_value)
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.query_params["lang"] = "zh-CN"
    at.run()
    assert not at.exception, at.exception
    errors = only_chinese([e.value for e in at.error], value, "private")  # ACCESS_MODE's own value
    assert any(shown in error for error in errors), errors


def deployed_zh(clean_env: pytest.MonkeyPatch, server: Any, **env: str) -> AppTest:
    """The page in Chinese on the deployer's key and the local server (the offline model is not
    held to the deployer's limits)."""
    return zh_app(
        clean_env, OPENAI_API_KEY="sk-deployer-0123456789abcdef", OPENAI_BASE_URL=server.base_url, **env
    )


def test_the_deployments_rate_limit_reads_in_chinese(clean_env, openai_server):
    """RateLimitedLocally."""
    at = deployed_zh(clean_env, openai_server, RATE_LIMIT_REQUESTS_PER_MIN="1")
    at.chat_input(key="chat_input").set_value("北京烤鸭怎么吃？").run()
    at.chat_input(key="chat_input").set_value("还有呢？").run()
    assert not at.exception, at.exception
    assert len(openai_server.chat_requests) == 1
    errors = only_chinese([e.value for e in at.error])
    assert any("你的工作区在过去一分钟内已发送 1 个请求，达到此部署允许的上限。请在" in e for e in errors), (
        errors
    )


def test_the_deployments_caps_read_in_chinese(clean_env, openai_server):
    at = open_settings(deployed_zh(clean_env, openai_server, MAX_REPLY_CAP="100", MAX_CONTEXT_BUDGET="800"))
    captions = [c.value for c in at.sidebar.caption if c.value.startswith("受此部署限制")]
    assert only_chinese(captions) == [
        "受此部署限制：此处回复上限最多为 100 个 token。",
        "受此部署限制：此处上下文预算最多为 800 个 token。",
    ]


def test_a_database_that_cannot_be_used_reads_in_chinese(clean_env, tmp_path):
    """A store error (here: a file that is not SQLite) is said in Chinese; the page still works."""
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_bytes(b"just some text, not a database\n" * 4)
    at = zh_app(clean_env, DATABASE_URL=f"sqlite:///{not_a_database}")
    warnings = [w.value for w in at.warning if w.value.startswith("对话目前无法保存")]
    assert len(only_chinese(warnings)) == 1
    assert "不是可读取的 SQLite 数据库（可能已损坏，或是别的文件）；它未被改动。" in warnings[0]
    assert not_a_database.read_bytes().startswith(b"just some text")


def test_the_editors_own_checks_read_in_chinese(clean_env):
    """The persona model's own validators (an avatar that is not one emoji) and the id's rule are
    worded in Chinese under their fields, with the fields' labels."""
    at = zh_page(clean_env)
    at.switch_page("app_pages/personas.py").run()
    next(b for b in at.button if b.label == "新建角色").click().run()
    fields = {w.label: w for w in [*at.text_input, *at.text_area]}
    id_label = next(label for label in fields if label.startswith("ID"))
    avatar_label = next(label for label in fields if "表情" in label)
    fields[id_label].input("my persona!")
    fields[avatar_label].input("abc")
    at.button(key="FormSubmitter:persona_form-保存").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert f"{avatar_label}：必须是一个表情符号，例如 🍜（只能一个），而不是 'abc'" in errors
    assert any(e.startswith(f"{id_label}：“my persona!”不是有效的 ID") for e in errors), errors
    only_chinese(errors, "'abc'", "my persona!")


def test_the_persona_import_report_reads_in_chinese(clean_env):
    """The report's format, notes, reasons and warnings are notices the page words: in Chinese,
    nothing but the source's own field names and values is English."""
    at = zh_page(clean_env)
    at.switch_page("app_pages/personas.py").run()
    agent = {
        "identifier": "chef",
        "author": "someone",
        "meta": {
            "title": "Chef",
            "description": "Cooks\nand talks.",
            "tags": ["x" * 50],
            "avatar": "data:image/png;base64,!!",
        },
        "config": {"params": {"top_p": 7, "temperature": "hot"}, "chatConfig": {"historyCount": 8}},
    }
    uploader = next(u for u in at.file_uploader if u.key == "persona_import_files_0")
    uploader.set_value([("chef.json", json.dumps(agent).encode(), "application/json")]).run()
    assert not at.exception, at.exception
    assert "来自 chef.json · LobeHub 助手" in [c.value for c in at.caption]
    warnings = [w.value for w in at.warning]
    assert "来源中没有系统提示词；已设为“You are Chef.”" in warnings
    mapped, dropped = (frame.value for frame in at.dataframe)
    notes = [note for note in mapped["说明"] if note]
    assert notes == ["已合并为一行"]
    reasons = dict(zip(dropped["来源"], dropped["原因"], strict=True))
    assert reasons["config.params.top_p"] == "7 超出了 top_p 的范围 0 到 1"
    assert reasons["config.params.temperature"] == "值为 'hot'，不是数字"
    assert reasons["config"].startswith("chatConfig.historyCount 计算的是消息条数而不是 token")
    assert reasons["author"] == "角色中没有对应位置；保留以便导出"
    only_chinese(list(reasons.values()), "'hot'", "'" + "x" * 50 + "'", "top_p", "first_mes")
    assert reasons["meta.tags[0]"].endswith("不是 1 到 40 个字符的一行文字")
    assert reasons["meta.avatar"] == "图片无法使用（是 base64 无效的数据 URL）；使用表情头像"


def test_files_that_cannot_be_imported_say_why_in_chinese(clean_env):
    """One error per file (PersonaFileError with its problems as notices), in Chinese."""
    import io

    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (8, 8)).save(picture, format="PNG")
    at = zh_page(clean_env)
    at.switch_page("app_pages/personas.py").run()
    uploads = [
        ("photo.png", picture.getvalue(), "image/png"),
        ("other.json", b'{"hello": "world"}', "application/json"),
        ("latin1.yaml", "name: Café\n".encode("latin-1"), "application/yaml"),
        ("cut.json", b'{"spec": "chara_card_v2", "data": {', "application/json"),
    ]
    uploader = next(u for u in at.file_uploader if u.key == "persona_import_files_0")
    uploader.set_value(uploads).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 4, errors
    assert errors[0].startswith("未导入：photo.png：这个 PNG 中没有角色卡")
    assert errors[1].startswith("未导入：other.json：是本应用不认识的 JSON 格式")
    assert errors[2] == "未导入：latin1.yaml：该文件不是 UTF-8 文本（偏移 9 处的字节 0xe9）"
    assert errors[3].startswith("未导入：cut.json：该文件不是有效的 JSON：第 1 行第 36 列：")
    # What the JSON parser said is quoted as it said it; the rest is Chinese.
    only_chinese(errors, errors[3].rsplit("：", 1)[-1], "modelSpecs", "chara")


def test_a_bad_persona_file_in_the_sidebar_reads_in_chinese(clean_env, tmp_path):
    """The persona folder's broken files (PersonaFileError) are listed in the sidebar in Chinese."""
    import shutil

    from core.personas.persona import BUNDLED_PERSONAS_DIR, PersonaFile

    folder = tmp_path / "personas"
    shutil.copytree(BUNDLED_PERSONAS_DIR, folder)
    (folder / "twice.yaml").write_text("name: A\nname: B\n", encoding="utf-8")
    (folder / "latin.yaml").write_bytes("name: Café\n".encode("latin-1"))
    (folder / "bad name.yaml").write_text("name: A\n", encoding="utf-8")
    (folder / "empty.yaml").write_text("", encoding="utf-8")
    (folder / "wrong.yaml").write_text(
        "name: A\navatar: abc\ncolour: red\ndescription: x\nsystem_prompt: x\ncontext_budget: 10\n",
        encoding="utf-8",
    )
    at = zh_app(clean_env, PERSONAS_DIR=str(folder))
    errors = [e.value for e in at.sidebar.error]
    wrong = errors.pop()
    assert wrong.startswith(
        "wrong.yaml：第 2 行：avatar：必须是一个表情符号，例如 🍜（只能一个），而不是 'abc'；"
    )
    assert "第 3 行：未知字段“colour”；允许的字段：name, avatar" in wrong
    assert "第 6 行：context_budget：应不小于 64（实际为 10）" in wrong
    assert "缺少必填字段“max_reply_tokens”" in wrong
    only_chinese([wrong], "wrong.yaml", "'abc'", "colour", *PersonaFile.model_fields)
    assert errors == [
        "bad name.yaml：文件名必须能作为有效的角色 ID（'bad name' 不行）："
        "只能使用字母、数字、“_”和“-”，例如 travel-planner",
        "empty.yaml：是空的；一个角色至少需要 name、avatar、description 和 system_prompt",
        "latin.yaml：不是 UTF-8 文本：第 1 行第 10 列的字节 0xe9；请把文件存为 UTF-8",
        "twice.yaml：第 2 行：键“name”出现了两次",
    ]
    only_chinese(
        errors,
        "bad name.yaml",
        "'bad name'",
        "travel-planner",
        "name",
        "avatar",
        "description",
        "system_prompt",
    )


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        (b'{"messages": 3}', "导入 bad.json 失败：无法导入对话：这不是对话导出文件："),
        (b'{"a": "caf\xe9"}', "导入 bad.json 失败：无法导入对话：文件不是 UTF-8 文本。"),
        (b'{"messages": [', "导入 bad.json 失败：无法导入对话：文件不是有效的 JSON（第 1 行第 15 列："),
    ],
)
def test_a_conversation_file_that_is_not_imported_says_why_in_chinese(clean_env, content, shown):
    """ConversationImportError: its problem (and the validation problems inside it) in Chinese."""
    from tests.apptest import open_expander

    at = zh_page(clean_env)
    open_expander(at, "settings_open").file_uploader(key="import_file").set_value(
        ("bad.json", content, "application/json")
    ).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error if e.value.startswith("导入 bad.json 失败")]
    assert len(errors) == 1 and errors[0].startswith(shown), errors
    # Field names are quoted as they are; the JSON parser's English is worded in Chinese too.
    only_chinese(errors, "bad.json", "messages", "model", "context_budget")
    if content.endswith(b"["):
        assert "此处应为一个值" in errors[0], errors


def test_an_action_the_conversation_refuses_reads_in_chinese():
    """ConversationStateError from a stale tab or a double click (nothing to regenerate, an empty
    summary, an empty message) is coded: its Chinese text, not its English sentence."""
    from core.chat.conversation import Conversation
    from core.chat.settings import ChatSettings
    from core.errors import ConversationStateError

    conversation = Conversation("You are terse.", ChatSettings(model="gpt-4o-mini", context_budget=1000))
    zh, refused = translator("zh-CN"), []
    for attempt in (
        conversation.regenerate,
        lambda: conversation.add_user("  "),
        lambda: conversation.edit_summary("x"),
    ):
        with pytest.raises(ConversationStateError) as caught:
            attempt()
        refused.append(zh(f"error.{caught.value.code}", **caught.value.fields))
    assert refused == ["没有可重新生成的回答。", "空消息无法发送。", "还没有可编辑的摘要。"]
