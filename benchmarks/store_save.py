"""What saving one turn costs in the store, at 20, 200 and 2,000 messages of history, side by side.

On SQLite (a temporary file, WAL, SQLite's default synchronous=FULL): for each history size, a
conversation is saved whole, then TURNS turns are played (question, DropOldest fitting the
budget, answer) and each is saved on its own. Prints the median time of one save and the
statements and rows it wrote; with the budget below, the 20-message history fits and the longer
ones trim an exchange on every turn (a trim adds a message rewrite and a trim-event row). Then
the time to load a 2,000-message conversation, and how much of it is rebuilding the
Conversation (validation and token recount) rather than reading rows.

Run: python -m benchmarks.store_save
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.chat.context import DropOldest
from core.chat.conversation import Conversation
from core.chat.settings import ChatSettings
from core.providers.backends import Usage
from core.store.database import Store

MODEL = "gpt-4o-mini"
BUDGET = 4_096
HISTORY_SIZES = (20, 200, 2_000)
TURNS = 30
LOADS = 7
OWNER = "benchmark"
POLICY = DropOldest()

QUESTION = "Turn {i}: how would you cook a {dish} for six people on a weeknight, and what can I prep ahead?"
ANSWER = (
    "For the {dish} on turn {i}: prep the aromatics and sauce the night before, keep the garnish "
    "separate, and cook the main part in two batches so the pan stays hot. Serve with rice and a "
    "sharp salad; leftovers keep two days in the fridge."
)
DISHES = ("mapo tofu", "paella", "ramen", "biryani", "shakshuka", "pho", "lasagne", "tagine")


def turn(conversation: Conversation, i: int) -> None:
    dish = DISHES[i % len(DISHES)]
    conversation.add_user(QUESTION.format(i=i, dish=dish))
    POLICY.fit(conversation)
    conversation.add_assistant(
        ANSWER.format(i=i, dish=dish), Usage(prompt_tokens=conversation.prompt_tokens, completion_tokens=60)
    )


def conversation_with_history(messages: int) -> Conversation:
    """The system prompt and `messages` more (user/assistant pairs), trimmed as they went."""
    conversation = Conversation(
        "You are a helpful cooking assistant.", ChatSettings(model=MODEL, context_budget=BUDGET)
    )
    for i in range(messages // 2):
        turn(conversation, i)
    return conversation


@contextmanager
def counting_writes(engine: sa.Engine) -> Iterator[Counter[str]]:
    """Statements that write, and the rows (parameter sets) they carry."""
    counts: Counter[str] = Counter()

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if statement.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            counts["statements"] += 1
            counts["rows"] += len(parameters) if many else 1

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def median_s(action: Callable[[], object], times: int) -> float:
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    print(
        f"SQLite file (WAL), model {MODEL}, context budget {BUDGET:,} tokens; "
        f"{TURNS} turns saved per history size, median per save\n"
    )
    header = (
        f"{'history':>8} | {'ms/save':>7} | {'statements/save':>15} | {'rows/save':>9} "
        f"| {'turns that trimmed':>18} | {'first save (whole history) ms':>29}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        store = Store(sa.URL.create("sqlite", database=str(Path(folder) / "bench.db")))
        largest: tuple[str, Conversation] | None = None
        for size in HISTORY_SIZES:
            conversation = conversation_with_history(size)
            start = time.perf_counter()
            handle = store.create(OWNER, conversation)
            first_save = time.perf_counter() - start
            seconds, statements, rows, trimmed = [], [], [], 0
            for i in range(TURNS):
                trims_before = len(conversation.trim_events)
                turn(conversation, 10_000 + i)
                trimmed += len(conversation.trim_events) > trims_before
                with counting_writes(store.engine) as writes:
                    start = time.perf_counter()
                    handle = store.save(OWNER, handle, conversation)
                    seconds.append(time.perf_counter() - start)
                statements.append(writes["statements"])
                rows.append(writes["rows"])
            print(
                f"{size:>8,} | {statistics.median(seconds) * 1e3:>7.2f} | "
                f"{statistics.mean(statements):>15.1f} | {statistics.mean(rows):>9.1f} "
                f"| {trimmed:>11} of {TURNS:<3} | {first_save * 1e3:>29.1f}"
            )
            largest = (handle.id, conversation)
        store.close()

        assert largest is not None
        conversation_id, conversation = largest
        count = len(conversation.messages)
        reopened = Store(sa.URL.create("sqlite", database=str(Path(folder) / "bench.db")))
        load_s = median_s(lambda: reopened.load(OWNER, conversation_id), LOADS)
        record = conversation.to_dict()
        rebuild_s = median_s(lambda: Conversation.from_dict(record), LOADS)
        open_s = median_s(
            lambda: Store(sa.URL.create("sqlite", database=str(Path(folder) / "bench.db"))).close(), LOADS
        )
        reopened.close()
    print(
        f"\nload a {count:,}-message conversation ({len(conversation.turns):,} turns, "
        f"{len(conversation.trim_events):,} trim events): {load_s * 1e3:.1f} ms median of {LOADS}, "
        f"of which rebuilding the Conversation (validate, recount tokens) {rebuild_s * 1e3:.1f} ms"
    )
    print(f"open the store (schema check, already at head): {open_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
