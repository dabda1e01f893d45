"""API keys never leave where they belong: not into exports, the page, the server log or files.

Two distinctive keys: one in the server's environment (OPENAI_API_KEY) and one typed into the
sidebar. The chat succeeds once and then fails with a 401 whose body echoes both keys, as a
careless proxy or server might.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import MAIN, REPO_ROOT, SIDEBAR, OpenApp, streamlit_process
from tests.openai_server import running_server

pytestmark = pytest.mark.browser

MAX_SCANNED_BYTES = 20 * 1024 * 1024
# The password field's value is the typed key by design (the user's own input in their own
# browser); everything else in the page must be free of it.
PAGE_HTML_WITHOUT_KEY_FIELD = """() => {
    const copy = document.documentElement.cloneNode(true);
    copy.querySelectorAll('input[type="password"]').forEach((field) => {
        field.removeAttribute('value');
        field.value = '';
    });
    return copy.outerHTML;
}"""


def files_modified_since(roots: list[Path], since: float) -> Iterator[Path]:
    """Regular files under `roots` modified at or after `since` (skipping what cannot be read)."""
    for root in roots:
        for directory, subdirectories, names in os.walk(root, onerror=lambda error: None):
            subdirectories[:] = [name for name in subdirectories if name not in {"proc", "sys"}]
            for name in names:
                path = Path(directory, name)
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                if info.st_mtime >= since and info.st_size <= MAX_SCANNED_BYTES:
                    yield path


def files_containing(paths: Iterator[Path], needles: list[str]) -> list[str]:
    patterns = [pattern for needle in needles for pattern in (needle.encode(), needle.encode("utf-16-le"))]
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {pattern[:24]!r}…" for pattern in patterns if pattern in data]
    return hits


def test_keys_do_not_leak(open_app: OpenApp, tmp_path: Path):
    started = time.time() - 1  # mtime granularity
    env_key = f"sk-SECRET-e2e-{secrets.token_hex(16)}"
    typed_key = f"sk-SECRET-typed-{secrets.token_hex(16)}"
    keys = [env_key, typed_key]

    with running_server() as openai_server:
        env = {"OPENAI_API_KEY": env_key, "OPENAI_BASE_URL": openai_server.base_url}
        with streamlit_process(tmp_path / "streamlit", env) as server:
            app = open_app(server)
            assert "(key from environment)" in app.page.locator(SIDEBAR).inner_text()

            # A successful turn with the deployer's key.
            app.send("第一个问题：饺子怎么包？", expect="You said: 第一个问题")
            assert openai_server.chat_requests[-1].headers["authorization"] == f"Bearer {env_key}"

            # The visitor's own key, then a 401 whose message echoes both keys.
            app.set_sidebar_text("API key", typed_key)
            app.page.locator(SIDEBAR).get_by_text("key typed here").wait_for()
            openai_server.fail(
                401,
                f"Incorrect API key provided: {typed_key}. The deployment key {env_key} is also wrong.",
                code="invalid_api_key",
            )
            app.send("第二个问题：包子呢？", error=True)
            assert openai_server.chat_requests[-1].headers["authorization"] == f"Bearer {typed_key}"
            (alert,) = app.chat_alerts()
            assert "HTTP 401" in alert and "[redacted]" in alert, alert  # the echo was scrubbed
            app.screenshot("secrets-01-after-401")

            # Exports hold the conversation, never a key.
            exported_json = app.download("JSON", tmp_path / "export.json", area=SIDEBAR)
            exported_md = app.download("Markdown", tmp_path / "export.md", area=SIDEBAR)
            for exported in (exported_json, exported_md):
                assert "第一个问题" in exported and "第二个问题" in exported
                for key in keys:
                    assert key not in exported

            # The page: visible text and HTML (the key field's own value aside).
            visible = app.body_text()
            html = app.page.evaluate(PAGE_HTML_WITHOUT_KEY_FIELD)
            main_html = app.page.locator(MAIN).inner_html()
            for key in keys:
                assert key not in visible
                assert key not in html
                assert key not in main_html
            assert env_key not in app.page.content()  # the deployer's key never reaches the browser
            key_field = app.page.locator(SIDEBAR).get_by_label("API key", exact=True)
            assert key_field.get_attribute("type") == "password"
            assert key_field.input_value() == typed_key
        # The server has stopped: its log is complete and nothing it writes on exit is missed.
        log = server.log()

    assert "Uvicorn server started" in log or "You can now view" in log, log
    for key in keys:
        assert key not in log, "an API key is in the Streamlit server's log"
    scanned = [REPO_ROOT, server.home, Path("/tmp")]
    leaks = files_containing(files_modified_since(scanned, started), keys)
    assert not leaks, f"an API key was written to disk: {leaks}"
