"""Fixtures shared by every test module: the repository, a clean environment, the page under
AppTest, and the local OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit
from streamlit import config as streamlit_config
from streamlit.runtime.secrets import Secrets
from streamlit.testing.v1 import AppTest

from core.policy.limits import RATE_LIMITS
from tests.anthropic_server import AnthropicServer, running_anthropic_server
from tests.openai_server import OpenAIServer, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "streamlit_app.py"
#: Every setting the app reads from the environment or Streamlit secrets (core/, ui/, the pages),
#: and those the OpenAI SDK reads itself: cleared so a developer's own never leak into a test.
#: tests/test_settings_cleared.py fails when the app reads one this list lacks.
DEPLOYER_SETTINGS = (
    # the connection (core/providers/connection.py)
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_TIMEOUT_S",
    "OPENAI_MAX_RETRIES",
    "REPLY_TIME_LIMIT_S",
    # read by the openai SDK itself
    "OPENAI_ADMIN_KEY",
    "OPENAI_WEBHOOK_SECRET",
    "OPENAI_CUSTOM_HEADERS",
    "OPENAI_LOG",
    "OPENAI_API_TYPE",
    "OPENAI_API_VERSION",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    # what visitors may spend (core/policy/limits.py, core/policy/netguard.py)
    "ALLOWED_BASE_URLS",
    "ALLOWED_MODELS",
    "MAX_REPLY_CAP",
    "MAX_CONTEXT_BUDGET",
    "MAX_MESSAGE_CHARS",
    "RATE_LIMIT_REQUESTS_PER_MIN",
    "RATE_LIMIT_TOKENS_PER_MIN",
    "RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN",
    "RATE_LIMIT_TOKENS_PER_DAY",
    # who sees what, where it is kept (core/policy/owners.py, core/store/database.py)
    "ACCESS_MODE",
    "DATABASE_URL",
    "DATA_DIR",
    "PERSONAS_DIR",
    # the page's pacing of the offline model
    "OFFLINE_CHUNK_DELAY_S",
)
#: The checkout's own database folder: the developer's conversations, which no test may touch.
CHECKOUT_DATA = REPO_ROOT / "data"

StartApp = Callable[..., AppTest]


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time (empty if there is no folder)."""
    state = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            state[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.fixture(autouse=True)
def checkout_data_untouched() -> Iterator[None]:
    """Fails the test that created, changed or removed anything in the checkout's `data/` (a
    fresh clone must not hold a test's "hello" conversation). The store's SQLite files change on
    every write, so a test that opened the default database is caught even if it wrote nothing."""
    before = folder_state(CHECKOUT_DATA)
    yield
    after = folder_state(CHECKOUT_DATA)
    touched = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not touched, (
        f"this test touched the checkout's {CHECKOUT_DATA}: {touched} (tests must use a temporary "
        "database: the clean_env / database_url fixtures)"
    )


@pytest.fixture
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite database for this test (never the developer's own data/dashboard.db)."""
    return f"sqlite:///{tmp_path / 'dashboard.db'}"


@pytest.fixture
def clean_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> Iterator[pytest.MonkeyPatch]:
    """No deployer setting from the developer's environment or secrets.toml; the offline model
    answers at once; conversations go to this test's own database."""
    for name in DEPLOYER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # st.secrets reads the checkout's and the home folder's .streamlit/secrets.toml (AppTest too,
    # when a test gives it no secrets): here it reads only a file in this test's folder.
    secrets_files = streamlit_config.get_option("secrets.files")
    streamlit_config.set_option("secrets.files", [str(tmp_path / "secrets.toml")])
    monkeypatch.setattr(streamlit, "secrets", Secrets())
    RATE_LIMITS.clear()  # the process's rate limiters: each test is a fresh deployment
    # AppTest has no real connection, so with ACCESS_MODE unset its visitor is a stranger and
    # gets a private workspace (tests/test_security.py checks that default with ACCESS_MODE="").
    # The page's own features are tested as a deployer's explicit single-user choice.
    monkeypatch.setenv("ACCESS_MODE", "single-user")
    monkeypatch.setenv("OFFLINE_CHUNK_DELAY_S", "0")
    monkeypatch.setenv("DATABASE_URL", database_url)
    yield monkeypatch
    streamlit_config.set_option("secrets.files", secrets_files)


@pytest.fixture
def start_app(clean_env: pytest.MonkeyPatch) -> StartApp:
    """`start_app(**env)`: the page under AppTest after its first run, with these settings set."""

    def start(**env: str) -> AppTest:
        for name, value in env.items():
            clean_env.setenv(name, value)
        at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
        return at

    return start


@pytest.fixture
def app(start_app: StartApp) -> AppTest:
    """The page on the offline model, after its first run."""
    return start_app()


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    """A fresh local Anthropic-compatible server per test (tests/anthropic_server.py)."""
    with running_anthropic_server() as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh local OpenAI-compatible server per test: no faults queued, no requests recorded."""
    with running_server() as server:
        yield server


# --- PostgreSQL, for the store tests (tests/postgres.py) -----------------------------------------

from tests import postgres  # noqa: E402  (kept with the fixtures that use it)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.PostgresCluster]:
    """One throwaway PostgreSQL server for the session; skipped when PostgreSQL is not installed,
    failed instead when REQUIRE_POSTGRES=1 (CI)."""
    import os

    bin_dir = postgres.find_bin_dir()
    if bin_dir is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {postgres.missing_reason()}")
        pytest.skip(postgres.missing_reason())
    with postgres.running_cluster(bin_dir) as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: postgres.PostgresCluster) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database on each store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
