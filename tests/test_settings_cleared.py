"""Every setting the app reads from the environment or Streamlit secrets is cleared by the
`clean_env` fixture, so a developer's own settings never change what a test sees."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from core.policy.limits import DeployerLimits
from tests.conftest import DEPLOYER_SETTINGS, REPO_ROOT

SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")
#: Names that carry settings: `os.environ`, an `environ` or `secrets` parameter, `st.secrets`.
SETTINGS_SOURCES = ("environ", "secrets")


def app_sources() -> list[Path]:
    """The page, its pages and every module under core/ and ui/."""
    files = [REPO_ROOT / "streamlit_app.py"]
    for folder in ("core", "ui", "app_pages"):
        files += sorted((REPO_ROOT / folder).rglob("*.py"))
    return [path for path in files if path.is_file() and "migrations" not in path.parts]


def names_a_source(node: ast.AST) -> bool:
    """`environ`, `os.environ`, `secrets`, `st.secrets`, `self.environ`, ..."""
    if isinstance(node, ast.Name):
        return any(source in node.id for source in SETTINGS_SOURCES)
    if isinstance(node, ast.Attribute):
        return any(source in node.attr for source in SETTINGS_SOURCES)
    return False


def setting_constants(nodes: list[ast.expr]) -> set[str]:
    return {
        node.value
        for node in nodes
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and SETTING_NAME.fullmatch(node.value)
    }


def settings_read(source: str) -> set[str]:
    """The setting names a module reads: `environ.get("X")`, `environ["X"]`, `"X" in environ`,
    `os.getenv("X")`, and any call handed an environ/secrets mapping with the name beside it
    (`_number(environ, "X", ...)`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            reads = isinstance(func, ast.Attribute) and func.attr in ("get", "getenv", "pop", "setdefault")
            if reads and (func.attr == "getenv" or names_a_source(func.value)):  # type: ignore[union-attr]
                found |= setting_constants(node.args[:1])
            if any(names_a_source(arg) for arg in node.args) or any(
                names_a_source(keyword.value) for keyword in node.keywords
            ):
                found |= setting_constants(node.args)
        elif isinstance(node, ast.Subscript) and names_a_source(node.value):
            found |= setting_constants([node.slice])
        elif isinstance(node, ast.Compare) and any(names_a_source(c) for c in node.comparators):
            found |= setting_constants([node.left])
    return found


def test_the_scan_finds_settings_read_in_each_way() -> None:
    source = """
import os
a = os.environ.get("ONE_SETTING", "")
b = environ["TWO_SETTING"]
c = secrets.get("THREE_SETTING")
d = _number(environ, "FOUR_SETTING", float, 1.0)
e = "FIVE_SETTING" in os.environ
f = os.getenv("SIX_SETTING")
g = other.get("NOT_A_SETTING")
"""
    assert settings_read(source) == {
        "ONE_SETTING",
        "TWO_SETTING",
        "THREE_SETTING",
        "FOUR_SETTING",
        "FIVE_SETTING",
        "SIX_SETTING",
    }


def test_clean_env_clears_every_setting_the_app_reads() -> None:
    read: dict[str, str] = {}
    for path in app_sources():
        for name in settings_read(path.read_text(encoding="utf-8")):
            read.setdefault(name, str(path.relative_to(REPO_ROOT)))
    # The deployer limits are read through their table, not a literal beside `environ`.
    for name in DeployerLimits.SETTINGS.values():
        read.setdefault(name, "core/policy/limits.py")
    assert "ALLOWED_MODELS" in read and "OPENAI_API_KEY" in read, "the scan found nothing"
    missing = {name: where for name, where in read.items() if name not in DEPLOYER_SETTINGS}
    assert not missing, f"add these to DEPLOYER_SETTINGS in tests/conftest.py: {missing}"


def test_a_developers_settings_do_not_reach_a_test(clean_env: pytest.MonkeyPatch) -> None:
    for name in DEPLOYER_SETTINGS:
        if name == "OFFLINE_CHUNK_DELAY_S":
            assert os.environ[name] == "0"
        elif name == "ACCESS_MODE":  # the tests' explicit choice (see clean_env)
            assert os.environ[name] == "single-user"
        elif name == "DATABASE_URL":
            assert os.environ[name].startswith("sqlite:///")
        else:
            assert name not in os.environ, name


def test_no_secrets_file_outside_the_tests_folder_is_read(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A developer's .streamlit/secrets.toml (in the checkout or the home folder) never reaches a
    test: the page's secrets come only from this test's folder, and from what is written there."""
    import streamlit as st
    from streamlit import config

    from ui.frame import deployer_secrets

    assert config.get_option("secrets.files") == [str(tmp_path / "secrets.toml")]
    assert deployer_secrets() == {}
    (tmp_path / "secrets.toml").write_text('ALLOWED_MODELS = "gpt-4o-mini"\n', encoding="utf-8")
    st.secrets._secrets = None  # as on a file change: read again
    assert deployer_secrets() == {"ALLOWED_MODELS": "gpt-4o-mini"}
