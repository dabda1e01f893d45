"""Fixtures shared by every test module: the repository, a clean environment, the page under
AppTest, and the local OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.openai_server import OpenAIServer, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "streamlit_app.py"
#: Deployer settings the app reads from the environment; cleared so the developer's own never leak in.
DEPLOYER_SETTINGS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_TIMEOUT_S",
    "OPENAI_MAX_RETRIES",
    "PERSONAS_DIR",
    "ACCESS_MODE",
    "DATABASE_URL",
)

StartApp = Callable[..., AppTest]


@pytest.fixture
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh SQLite database for this test (never the developer's own data/dashboard.db)."""
    return f"sqlite:///{tmp_path / 'dashboard.db'}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> pytest.MonkeyPatch:
    """No deployer setting from the developer's environment; the offline model answers at once;
    conversations go to this test's own database."""
    for name in DEPLOYER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # AppTest has no real connection, so with ACCESS_MODE unset its visitor is a stranger and
    # gets a private workspace (tests/test_security.py checks that default with ACCESS_MODE="").
    # The page's own features are tested as a deployer's explicit single-user choice.
    monkeypatch.setenv("ACCESS_MODE", "single-user")
    monkeypatch.setenv("OFFLINE_CHUNK_DELAY_S", "0")
    monkeypatch.setenv("DATABASE_URL", database_url)
    return monkeypatch


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
