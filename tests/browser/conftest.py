"""End-to-end fixtures: a real `streamlit run` server and Debian's Chromium driven by Playwright.

Every test here is marked `browser`. Without /usr/bin/chromium (or the playwright package) they are
skipped with the reason, unless REQUIRE_BROWSER=1 (CI), in which case they fail.

    def test_x(streamlit_server, open_app):
        app = open_app(streamlit_server)
        app.send("你好", expect="[Offline model]")

`streamlit_server` takes extra environment through indirect parametrization
(`@pytest.mark.parametrize("streamlit_server", [{"OPENAI_API_KEY": ...}], indirect=True)`);
`start_streamlit(env)` starts more servers, e.g. one pointed at a port known only at run time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import Browser, Page, Playwright, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # reported as a skip (or a failure under REQUIRE_BROWSER=1) below
    sync_playwright = None

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "streamlit_app.py"
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_TIMEOUT_S = 60.0
#: Default wait for the page (a turn, a rerun); generous because 2 cores may serve 10+ sessions.
UI_TIMEOUT_MS = 90_000
BROWSER_DIR = Path(__file__).resolve().parent

# Selectors of Streamlit's own test ids (stable across releases; Streamlit's e2e tests use them).
APP_ROOT = '[data-testid="stApp"]'
CHAT_INPUT = '[data-testid="stChatInputTextArea"]'
CHAT_MESSAGE = '[data-testid="stChatMessage"]'
ALERT = '[data-testid="stAlert"]'
BADGE = '[data-testid="stBadge"]'
CHART = '[data-testid="stVegaLiteChart"]'
DATAFRAME = '[data-testid="stDataFrame"]'
TABLE = '[data-testid="stTable"]'
EXCEPTION = '[data-testid="stException"]'
METRIC = '[data-testid="stMetric"]'
SIDEBAR = '[data-testid="stSidebar"]'
MAIN = "#stMain"  # its test id changes when the chat input is pinned to the bottom
STATUS_WIDGET = '[data-testid="stStatusWidget"]'

# True when the app is connected, no script run is under way and no element is stale (an element
# from the previous run that the current run has not redrawn yet).
_IDLE_JS = f"""() => {{
    const app = document.querySelector('{APP_ROOT}');
    return !!app
        && app.getAttribute('data-test-connection-state') === 'CONNECTED'
        && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('{STATUS_WIDGET}')
        && !document.querySelector('[data-stale="true"]');
}}"""


# --- skipping when there is no browser ------------------------------------------------------


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if sync_playwright is None:
        return "the playwright Python package is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium fonts-noto-cjk fonts-noto-color-emoji)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = browser_unavailable()
    if reason is None:
        return
    required = os.environ.get("REQUIRE_BROWSER") == "1"
    for item in items:
        if BROWSER_DIR not in Path(str(item.path)).parents:
            continue
        if required:
            # CI must not pass by skipping: the fixture below fails each test with the reason.
            continue
        item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


@pytest.fixture(scope="session", autouse=True)
def _require_browser() -> None:
    reason = browser_unavailable()
    if reason is not None:
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)


# --- the Streamlit server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StreamlitServer:
    """One `streamlit run streamlit_app.py` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)
    #: Browser sessions opened on it so far (its first one also loads the tokenizers).
    sessions: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss_kib(self) -> int:
        """The server process's resident memory (VmRSS), in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def health(self) -> str:
        with urllib.request.urlopen(f"{self.url}_stcore/health", timeout=2) as response:
            return response.read().decode()


def _server_env(home: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        # The app must see only what the test gives it: no key, URL or Streamlit setting of ours.
        if not name.startswith(
            ("OPENAI_", "STREAMLIT_", "PERSONAS_DIR", "DATABASE_URL", "DATA_DIR", "ACCESS_MODE")
        )
    }
    env.update(
        HOME=str(home),
        # Each server its own database unless the test shares one (several replicas).
        DATABASE_URL=f"sqlite:///{home / 'dashboard.db'}",
        OFFLINE_CHUNK_DELAY_S="0.01",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra or {})
    return env


@contextlib.contextmanager
def streamlit_process(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[StreamlitServer]:
    """Start the app on a free port under `root` (HOME and log live there); stop it on exit."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = root / "streamlit.log"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--browser.serverAddress",
        "127.0.0.1",
        # Source files may change while the suite runs (other work in the checkout); a reload
        # mid-test would re-import `core` under the app's cached resources. Tests run the code
        # as it was at start-up, like a deployment does.
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
    ]
    env = _server_env(home, extra_env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = StreamlitServer(process=process, port=port, home=home, log_path=log_path, env=env)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{server.log()}", pytrace=False)
            with contextlib.suppress(OSError):
                if server.health() == "ok":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not become healthy:\n{server.log()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


StartStreamlit = Callable[..., StreamlitServer]


@pytest.fixture
def start_streamlit(tmp_path: Path) -> Iterator[StartStreamlit]:
    """`start_streamlit(env=None)`: a started server with extra environment; stopped at teardown."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(env: dict[str, str] | None = None) -> StreamlitServer:
            nonlocal count
            count += 1
            return stack.enter_context(streamlit_process(tmp_path / f"streamlit-{count}", env))

        yield start


@pytest.fixture
def streamlit_server(request: pytest.FixtureRequest, start_streamlit: StartStreamlit) -> StreamlitServer:
    """A server on the offline model, or with `request.param` (a dict) added to its environment."""
    return start_streamlit(getattr(request, "param", None))


@pytest.fixture(scope="session")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    """One server on the offline model shared by the tests that need nothing else; starting a
    server and its first session costs seconds. Each browser context is a visitor of its own
    (ACCESS_MODE=private, as on a public deployment), so no test sees another's conversations."""
    root = tmp_path_factory.mktemp("streamlit-offline")
    with streamlit_process(root, {"ACCESS_MODE": "private"}) as server:
        yield server


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """The session's one Playwright driver: its sync API allows one per thread, so a test that
    needs a Chromium launched with other flags launches it from this one."""
    driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


class AppPage:
    """One browser session of the app: a Playwright page with Streamlit-aware waits."""

    def __init__(self, page: Page, server: StreamlitServer) -> None:
        self.page = page
        self.server = server

    # --- waiting -------------------------------------------------------------------------

    def wait_idle(self, timeout_ms: int = UI_TIMEOUT_MS, settle_s: float = 0.25) -> None:
        """Wait until no script run is under way, and it stays so for `settle_s` (a rerun or a
        queued interaction can start right after a run ends)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(deadline - time.monotonic(), 0.1)
            self.page.wait_for_function(_IDLE_JS, timeout=remaining * 1000, polling=50)
            time.sleep(settle_s)
            if self.page.evaluate(_IDLE_JS):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the app never settled; server log:\n{self.server.log()}")

    def wait_until(self, js: str, what: str, timeout_ms: int = 15_000) -> None:
        """Wait for the JS predicate `js`; on timeout fail saying `what` did not happen."""
        try:
            self.page.wait_for_function(js, timeout=timeout_ms, polling=100)
        except PlaywrightTimeout:
            raise AssertionError(f"timed out after {timeout_ms} ms: {what}") from None

    def open(self) -> AppPage:
        self.page.goto(self.server.url)
        return self.wait_loaded()

    def wait_loaded(self) -> AppPage:
        """Wait for the first run of the page to be drawn completely."""
        self.page.locator(CHAT_INPUT).wait_for(state="visible")
        self.page.locator(CHART).first.wait_for(state="visible")  # the dashboard has been drawn
        self.wait_idle()
        self.assert_no_exception()
        self.server.sessions += 1
        return self

    # --- reading -------------------------------------------------------------------------

    def messages(self) -> list[str]:
        """The text of every chat message, greeting first."""
        return [text.strip() for text in self.page.locator(CHAT_MESSAGE).all_inner_texts()]

    def alerts(self) -> list[str]:
        return [text.strip() for text in self.page.locator(ALERT).all_inner_texts()]

    def chat_alerts(self) -> list[str]:
        """Alerts in the main area (the sidebar always has an info or success box)."""
        return [text.strip() for text in self.page.locator(f"{MAIN} {ALERT}").all_inner_texts()]

    def metric(self, label: str) -> str:
        """The value of the (first) metric whose label starts with `label`."""
        for metric in self.page.locator(f"{MAIN} {METRIC}").all():
            if metric.locator('[data-testid="stMetricLabel"]').inner_text().strip().startswith(label):
                return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
        raise AssertionError(f"no metric labelled {label!r}")

    def persona(self) -> str:
        """The persona selector's text, e.g. "🍜 美食家"."""
        return self.page.locator(SIDEBAR).get_by_role("combobox", name="Persona").input_value()

    def body_text(self) -> str:
        return self.page.locator("body").inner_text()

    def assert_no_exception(self) -> None:
        """Fail with the traceback the page shows, and the server's log, if the script raised."""
        shown = self.page.locator(EXCEPTION).all_inner_texts()
        assert not shown, f"the app raised:\n{shown[0]}\n--- server log ---\n{self.server.log()}"

    # --- acting --------------------------------------------------------------------------

    def submit(self, text: str) -> int:
        """Type `text` into the chat input and press Enter; returns the message count before."""
        before = self.page.locator(CHAT_MESSAGE).count()
        box = self.page.locator(CHAT_INPUT)
        box.fill(text)
        box.press("Enter")
        return before

    def wait_reply(self, before: int, expect: str | None = None, *, error: bool = False) -> str:
        """Wait for the turn started when `before` messages were shown; returns the last message.

        `expect`: text the reply must contain. `error`: the turn must end in an error box instead.
        """
        condition = f"""([before, expect, error]) => {{
            if (document.querySelector('{EXCEPTION}')) return true;  // reported below
            const messages = document.querySelectorAll('{CHAT_MESSAGE}');
            if (error) return messages.length >= before + 1
                && !!document.querySelector('{MAIN} {ALERT}');
            if (messages.length < before + 2) return false;
            const last = messages[messages.length - 1].innerText;
            return expect === null || last.includes(expect);
        }}"""
        self.page.wait_for_function(condition, arg=[before, expect, error], timeout=UI_TIMEOUT_MS, polling=50)
        self.wait_idle()
        self.assert_no_exception()
        messages = self.messages()
        if expect is not None and not error:
            assert expect in messages[-1], messages[-1]
        return messages[-1]

    def send(self, text: str, expect: str | None = "[Offline model]", *, error: bool = False) -> str:
        """Send one chat message and wait for the reply (or the error box)."""
        return self.wait_reply(self.submit(text), expect, error=error)

    def open_expander(self, label: str, *, area: str = MAIN) -> None:
        """Open the expander labelled `label` in `area` (a lazy one draws its content on opening)."""
        expander = (
            self.page.locator(f'{area} [data-testid="stExpander"]')
            .filter(has=self.page.locator("summary", has_text=label))
            .first
        )
        expander.locator("summary").click()
        # Drawn: the rerun that opening asks for has begun and sent the content (idle alone can
        # be seen before that rerun starts, on a busy machine).
        expander.locator(
            '[data-testid="stExpanderDetails"] [data-testid="stElementContainer"]'
        ).first.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
        self.wait_idle()

    def show_view(self, label: str) -> None:
        """Go to a view by the view switch at the top of the page ("Chat", "Personas", ...)."""
        switch = self.page.locator(f'{MAIN} [data-testid="stRadio"]').first
        switch.locator("label").filter(has_text=label).first.click()
        self.wait_idle()

    def open_conversation(self, title: str) -> None:
        """Open the conversation the sidebar lists under `title`."""
        listed = self.page.locator(f'{SIDEBAR} [data-testid="stRadio"] label').filter(has_text=title)
        listed.first.click()

    def open_settings(self) -> None:
        """Open the sidebar's settings (connection, model, budget, export), closed on load."""
        expanders = self.page.locator(f'{SIDEBAR} [data-testid="stExpander"]')
        expander = expanders.filter(has_text="Settings").first
        if expander.locator("details").get_attribute("open") is None:
            self.open_expander("Settings", area=SIDEBAR)

    def select_persona(self, label: str) -> None:
        """Pick the persona whose option text contains `label` from the sidebar selectbox."""
        self.page.locator(SIDEBAR).get_by_role("combobox", name="Persona").click()
        self.page.get_by_role("option").filter(has_text=label).click()
        self.page.locator("h1").filter(has_text=label).wait_for()
        self.wait_idle()

    def download(self, label: str, destination: Path, *, area: str = MAIN) -> str:
        """Click the download button labelled `label` in `area` (MAIN or SIDEBAR); the file's text."""
        if area == SIDEBAR:
            self.open_settings()
        button = self.page.locator(f'{area} [data-testid="stDownloadButton"]').filter(has_text=label)
        with self.page.expect_download() as info:
            button.click()
        info.value.save_as(destination)
        return destination.read_text(encoding="utf-8")

    def set_sidebar_text(self, label: str, value: str) -> None:
        """Type into the sidebar text input labelled `label` and commit it (Enter)."""
        self.open_settings()
        field = self.page.locator(SIDEBAR).get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        time.sleep(0.2)  # the rerun starts once the widget's value reaches the server
        self.wait_idle()

    def screenshot(
        self, name: str, *, full_page: bool = False, height: int | None = None, top: bool = False
    ) -> Path:
        """Save a PNG of the viewport under artifacts/.

        `height` takes a taller viewport for it, `full_page` one as tall as the page (Streamlit
        scrolls its own main container, which Playwright's full_page option does not see); `top`
        scrolls to the top first (a bottom-pinned chat input keeps the page scrolled to the end).
        """
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        main = self.page.locator(MAIN)
        if full_page:
            height = main.evaluate("(main) => main.scrollHeight")
        if height is not None:
            self.page.set_viewport_size(
                {"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)}
            )
        try:
            time.sleep(0.5)  # charts re-fit to the new size
            if top:
                # A wheel, as a user scrolls: the stick-to-bottom container ignores scrollTo().
                box = main.bounding_box() or {"x": 400, "y": 300, "width": 0, "height": 0}
                self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 200)
                for _ in range(3):
                    self.page.mouse.wheel(0, -100_000)
                    time.sleep(0.2)
                self.page.wait_for_function(
                    f"() => document.querySelector('{MAIN}').scrollTop === 0", timeout=5_000
                )
            self.page.screenshot(path=path)
        finally:
            if height is not None:
                self.page.set_viewport_size(VIEWPORT)
        return path


OpenApp = Callable[..., AppPage]


@pytest.fixture
def open_app(browser: Browser) -> Iterator[OpenApp]:
    """`open_app(server, wait=True)`: a new browser context (a new Streamlit session) on `server`.

    With `wait=False` the page is only navigated to, so many sessions can load at once.
    """
    contexts: list[Any] = []

    def open_page(server: StreamlitServer, *, wait: bool = True) -> AppPage:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        app = AppPage(context.new_page(), server)
        if wait:
            return app.open()
        app.page.goto(server.url)
        return app

    yield open_page
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


def copy_artifact(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
