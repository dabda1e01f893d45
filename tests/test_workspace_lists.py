"""The lists a workspace reads from the store on every rerun (the sidebar's conversations and
comparisons): read once while nothing changed, read again after any write of this process, and
after `LISTING_REUSED_S` for another process's writes. Real SQLite; the statements are counted
by SQLAlchemy's own event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from core.personas.persona import load_personas
from core.providers.offline import OfflineBackend
from core.store import workspace as workspace_module
from core.store.database import Store
from core.store.workspace import Workspace
from tests.conftest import REPO_ROOT

OWNER = "alice"


def statements_of(store: Store) -> list[str]:
    """Every SQL statement `store` runs from now on."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


def chat(workspace: Workspace, text: str) -> str:
    """A new conversation with the foodie in `workspace`, one question, saved; its id."""
    persona = load_personas(REPO_ROOT / "personas").personas["foodie"]
    key = workspace.new(persona, OfflineBackend())
    workspace.sessions[key].conversation.add_user(text)
    workspace.save(key)
    return key


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'dashboard.db'}")


def test_a_rerun_that_changed_nothing_reads_no_list(store: Store) -> None:
    tab = Workspace(store, OWNER)
    chat(tab, "饺子怎么包？")
    listed, comparisons = tab.list(persona_id="foodie"), tab.list_comparisons()
    statements = statements_of(store)
    for _ in range(3):
        assert tab.list(persona_id="foodie") == listed and tab.list_comparisons() == comparisons
    assert statements == []
    # Another question asked of the store is read.
    assert [c.id for c in tab.list(search="饺子")] == [c.id for c in listed]
    assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT"]


def test_a_write_of_this_process_shows_at_the_next_rerun(store: Store) -> None:
    tab, other_tab = Workspace(store, OWNER), Workspace(store, OWNER)
    first = chat(tab, "one")
    assert [c.id for c in other_tab.list()] == [first]
    second = chat(tab, "two")  # the other tab's list is read again at its next rerun
    assert [c.id for c in other_tab.list()] == [second, first]
    tab.rename(first, "Dumplings")
    assert [c.title for c in other_tab.list()][1] == "Dumplings"
    tab.delete(second)
    assert [c.id for c in other_tab.list()] == [first]


def test_another_process_write_shows_after_the_reuse_time(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tab = Workspace(store, OWNER)
    first = chat(tab, "one")
    assert [c.id for c in tab.list()] == [first]
    with Store(f"sqlite:///{tmp_path / 'dashboard.db'}") as replica:  # another server, same database
        second = chat(Workspace(replica, OWNER), "two")
    assert [c.id for c in tab.list()] == [first]  # read less than LISTING_REUSED_S ago
    monkeypatch.setattr(workspace_module, "LISTING_REUSED_S", 0.0)
    assert [c.id for c in tab.list()] == [second, first]


def test_a_caller_cannot_change_the_list_kept(store: Store) -> None:
    tab = Workspace(store, OWNER)
    chat(tab, "one")
    tab.list().clear()
    assert len(tab.list()) == 1
