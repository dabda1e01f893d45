"""Compare mode's core (core/compare/comparison.py): columns that stream at the same time, a failure that
stays in its column, stop and retry per column, blind picks and votes, and the exports;
with the scripted backend, and with the real SDK over HTTP against the local test server."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.compare.comparison import (
    Column,
    Comparison,
    ComparisonSnapshot,
    markdown_cell,
)
from core.compare.leaderboard import leaderboard, votes_from_picks
from core.counting.model_info import load_model_table
from core.counting.tokens import count_prompt_tokens
from core.errors import (
    ConversationImportError,
    ConversationStateError,
    RateLimited,
    StreamInterrupted,
)
from core.providers.backends import OpenAIBackend
from core.providers.offline import OfflineBackend
from core.providers.scripted import ScriptedBackend, ScriptedReply
from tests.openai_server import running_server

SYSTEM = "You are a terse assistant."
#: Long enough for a test to fail rather than hang; far shorter than a scripted gate's 30 s.
TIMEOUT = 5.0
PRICES = load_model_table()


class Steps(threading.Event):
    """A `ScriptedReply.gate` that lets one chunk through per `allow()`."""

    def __init__(self, allowed: int = 0) -> None:
        super().__init__()
        self._permits = threading.Semaphore(allowed)

    def allow(self, chunks: int = 1) -> None:
        self._permits.release(chunks)

    def wait(self, timeout: float | None = None) -> bool:
        return self._permits.acquire(timeout=timeout)


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    """Gates a test opened fully at its end, so no worker is left waiting on one."""
    opened: list[threading.Event] = []
    yield opened
    for gate in opened:
        if isinstance(gate, Steps):
            gate.allow(100)
        gate.set()


def column(
    *replies: str | ScriptedReply,
    persona: str = "foodie",
    model: str = "gpt-4o-mini",
    budget: int = 1000,
    label: str | None = None,
) -> Column:
    settings = ChatSettings(model=model, context_budget=budget)
    backend = ScriptedBackend().enqueue(*replies)
    return Column(ChatSession(Conversation(SYSTEM, settings, persona_id=persona), backend), label)


def requests_of(col: Column) -> int:
    backend = col.session.backend
    assert isinstance(backend, ScriptedBackend)
    return len(backend.requests)


def wait_until(
    comparison: Comparison, condition: Callable[[ComparisonSnapshot], bool], what: str
) -> ComparisonSnapshot:
    """Poll snapshots as the page does until `condition` holds; fail after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    view = comparison.snapshot()
    while not condition(view):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}; states: {[c.state for c in view.columns]}")
        comparison.wait_for_change(view.version, timeout=0.05)
        view = comparison.snapshot()
    return view


def finished(comparison: Comparison) -> ComparisonSnapshot:
    assert comparison.wait(TIMEOUT), "the columns did not finish"
    return comparison.snapshot()


# --- Concurrency -------------------------------------------------------------------------------


def test_the_columns_stream_at_the_same_time(gates: list[threading.Event]) -> None:
    # A cannot start until B has streamed a chunk, and B cannot finish until A has streamed one:
    # columns run one after another (in either order) would wait here until the timeout.
    a_gate, b_steps = threading.Event(), Steps(allowed=1)
    gates += [a_gate, b_steps]
    a = column(ScriptedReply(chunks=["A1 ", "A2"], gate=a_gate))
    b = column(ScriptedReply(chunks=["B1 ", "B2"], gate=b_steps))
    comparison = Comparison([a, b], model_table=PRICES)
    # send() returns at once (run on a thread of its own, so a send that blocked fails here).
    sent: list[int] = []
    sender = threading.Thread(target=lambda: sent.append(comparison.send("Go")), daemon=True)
    sender.start()
    sender.join(TIMEOUT)
    assert sent == [1], "send() did not return while the replies were held"
    assert comparison.busy

    view = wait_until(comparison, lambda v: v.columns[1].text == "B1 ", "B streamed its first chunk")
    assert view.columns[0].state == "waiting" and view.columns[0].text == ""
    assert view.columns[1].state == "streaming" and view.columns[1].figures.time_to_first_token_s is not None
    a_gate.set()
    wait_until(comparison, lambda v: v.columns[0].text.startswith("A1"), "A streamed while B was open")
    assert b.state == "streaming"
    b_steps.allow()

    view = finished(comparison)
    assert [c.state for c in view.columns] == ["done", "done"]
    assert [c.text for c in view.columns] == ["A1 A2", "B1 B2"]
    fa, fb = view.columns[0].figures, view.columns[1].figures
    # The two replies were in flight at the same time.
    assert fa.time_to_first_token_s < fb.last_token_s and fb.time_to_first_token_s < fa.last_token_s
    assert view.columns[0].messages[-1].content == "A1 A2"


def test_each_column_records_its_own_figures() -> None:
    a = column("Short.", model="gpt-4o-mini")
    b = column("A rather longer answer.", model="gpt-4.1-mini", budget=500)
    c = column("Local model.", model="llama3.2", persona="tutor")
    comparison = Comparison([a, b, c], model_table=PRICES)
    comparison.send("How do I eat Peking duck?")
    view = finished(comparison)
    for col, view_column in zip([a, b, c], view.columns, strict=True):
        figures = view_column.figures
        turn = col.session.last_turn
        assert figures is not None and turn is not None
        assert figures.state == "done" and figures.round == 1 and figures.attempt == 1
        sent = col.session.backend.requests[0].messages  # type: ignore[attr-defined]
        assert figures.prompt_tokens_counted == count_prompt_tokens(sent, turn.model)
        assert figures.prompt_tokens_reported == turn.reported_prompt_tokens
        assert figures.reply_tokens_counted == turn.counted_completion_tokens == figures.reply_tokens
        assert figures.usage_source == "server"
        assert figures.context_budget == col.session.settings.context_budget
        assert figures.time_to_first_token_s is not None and figures.total_s is not None
        assert 0 <= figures.time_to_first_token_s <= figures.last_token_s <= figures.total_s
        assert figures.turn_number == 1 and figures.reply_id == turn.reply_id
        assert view_column.elapsed_s == figures.total_s
    costs = [column.figures.cost_usd for column in view.columns]
    info = PRICES.lookup("gpt-4.1-mini")
    assert info is not None
    turn = b.session.last_turn
    assert turn is not None
    assert costs[1] == pytest.approx(info.cost(turn.prompt_tokens, turn.reply_tokens))
    assert costs[0] is not None and costs[2] is None  # llama3.2 has no price


def test_trims_show_in_the_figures_of_the_column_that_trimmed() -> None:
    long_answer = "word " * 100
    small = column(long_answer, "second", budget=80)
    large = column(long_answer, "second", budget=1000)
    comparison = Comparison([small, large], model_table=PRICES)
    comparison.send("first")
    finished(comparison)
    comparison.send("next")
    view = finished(comparison)
    trimmed, kept = view.columns[0].figures, view.columns[1].figures
    assert trimmed.trimmed_messages == 2 and trimmed.tokens_freed > 100
    assert kept.trimmed_messages == 0 and kept.tokens_freed == 0
    assert trimmed.prompt_tokens_counted < 80 < kept.prompt_tokens_counted
    assert len(view.columns[0].trim_events) == 1 and view.columns[1].trim_events == ()


# --- Failures, stop and retry ------------------------------------------------------------------


def test_a_failing_column_stays_in_its_column_and_retries_alone() -> None:
    refusal = RateLimited("Too many requests (HTTP 429).", status_code=429, retry_after=7.0)
    a, b = column("Answer A."), column("Answer B.")
    c = column(ScriptedReply(error=refusal), "Answer C, at last.")
    comparison = Comparison([a, b, c], model_table=PRICES)
    comparison.send("Question")
    view = finished(comparison)

    assert [col.state for col in view.columns] == ["done", "done", "failed"]
    assert [col.text for col in view.columns] == ["Answer A.", "Answer B.", ""]
    failed = view.columns[2]
    assert failed.error is refusal and c.error is refusal
    info = failed.figures.error
    assert info is not None
    assert (info.kind, info.status_code, info.retry_after, info.retryable) == ("RateLimited", 429, 7.0, True)
    assert failed.figures.cost_usd is None and failed.figures.reply_tokens is None
    assert failed.figures.time_to_first_token_s is None and failed.figures.total_s is not None
    assert failed.can_retry and not view.columns[0].can_retry
    assert c.session.conversation.pending_user_message is not None

    comparison.retry(2)
    view = finished(comparison)
    assert [requests_of(col) for col in (a, b, c)] == [1, 1, 2]
    assert view.columns[2].state == "done" and view.columns[2].text == "Answer C, at last."
    assert view.columns[2].error is None
    assert [(run.round, run.attempt, run.state) for run in view.columns[2].runs] == [
        (1, 1, "failed"),
        (1, 2, "done"),
    ]
    assert view.columns[0].runs == (view.columns[0].figures,)
    with pytest.raises(ConversationStateError, match="no failed answer"):
        comparison.retry(0)


def test_a_reply_that_breaks_off_keeps_its_text_in_its_column() -> None:
    broken = ScriptedReply(
        chunks=["Half ", "an ", "answer"], error=StreamInterrupted("cut"), error_after_chunks=2
    )
    a, b = column("Whole answer."), column(broken, "Full answer.")
    comparison = Comparison([a, b], model_table=PRICES)
    comparison.send("Question")
    view = finished(comparison)
    assert view.columns[0].state == "done"
    failed = view.columns[1]
    assert failed.state == "failed" and failed.text == "Half an "
    assert failed.figures.interrupted and failed.figures.reply_id is not None
    assert failed.figures.error is not None and failed.figures.error.partial_text == "Half an "
    assert isinstance(failed.error, StreamInterrupted)
    assert failed.messages[-1].content == "Half an " and failed.messages[-1].interrupted
    # Asking again sets the partial answer aside.
    assert failed.can_retry
    comparison.retry(1)
    view = finished(comparison)
    assert view.columns[1].text == "Full answer." and view.columns[1].state == "done"
    assert [m.content for m in b.session.conversation.context_messages()][1:] == ["Question", "Full answer."]


def test_stop_one_column_keeps_its_partial_and_the_others_finish(gates: list[threading.Event]) -> None:
    steps = Steps(allowed=1)
    gates.append(steps)
    a = column(ScriptedReply(chunks=["one ", "two ", "three"], gate=steps), "Again, in full.")
    b = column("B finishes.")
    comparison = Comparison([a, b], model_table=PRICES)
    comparison.send("Count")
    wait_until(
        comparison, lambda v: v.columns[0].text == "one " and v.columns[1].state == "done", "A is mid-reply"
    )
    assert comparison.stop(0)
    view = comparison.snapshot()
    assert view.columns[0].stopping and view.columns[0].running and view.busy
    assert not comparison.stop(1)  # already done
    steps.allow()  # the worker sees the stop at its next chunk
    view = finished(comparison)
    stopped = view.columns[0]
    assert stopped.state == "stopped" and not stopped.stopping
    assert stopped.text == "one two "
    assert stopped.figures.interrupted and stopped.figures.error is None
    assert stopped.messages[-1].content == "one two " and stopped.messages[-1].interrupted
    assert a.session.conversation.turns[-1].interrupted and not a.session.replying
    assert view.columns[1].state == "done" and view.columns[1].text == "B finishes."
    assert not comparison.stop(0)

    comparison.retry(0)
    view = finished(comparison)
    assert view.columns[0].text == "Again, in full." and view.columns[0].figures.attempt == 2


def test_sending_is_refused_while_a_column_replies(gates: list[threading.Event]) -> None:
    gate = threading.Event()
    gates.append(gate)
    comparison = Comparison([column(ScriptedReply(text="slow", gate=gate)), column("fast")])
    with pytest.raises(ConversationStateError, match="empty"):
        comparison.send("  ")
    comparison.send("one")
    with pytest.raises(ConversationStateError, match="still replying"):
        comparison.send("two")
    with pytest.raises(ConversationStateError, match="still replying"):
        comparison.retry(0)
    with pytest.raises(ConversationStateError, match="finished"):
        comparison.to_markdown()
    with pytest.raises(ConversationStateError, match="finished"):
        comparison.pick(1)
    gate.set()
    assert finished(comparison).columns[0].text == "slow"


def test_an_unexpected_error_in_a_column_is_kept_as_a_dashboard_error() -> None:
    comparison = Comparison([column("fine"), column()])  # the second has no reply queued
    comparison.send("hi")
    view = finished(comparison)
    assert view.columns[0].state == "done"
    assert view.columns[1].state == "failed" and view.columns[1].figures.error.kind == "DashboardError"
    assert isinstance(view.columns[1].error.__cause__, LookupError)


def test_a_comparison_takes_two_to_four_columns_that_do_not_share_unsafe_state() -> None:
    with pytest.raises(ConversationStateError, match="2 to 4"):
        Comparison([column()])
    with pytest.raises(ConversationStateError, match="2 to 4"):
        Comparison([column() for _ in range(5)])
    shared = ScriptedBackend()
    settings = ChatSettings(model="gpt-4o-mini", context_budget=1000)
    sessions = [ChatSession(Conversation(SYSTEM, settings), shared) for _ in range(2)]
    with pytest.raises(ConversationStateError, match="ScriptedBackend, which is not thread-safe"):
        Comparison([Column(s) for s in sessions])
    one = column()
    with pytest.raises(ConversationStateError, match="its own chat session"):
        Comparison([one, Column(one.session)])
    offline = OfflineBackend()
    both = Comparison([Column(ChatSession(Conversation(SYSTEM, settings), offline)) for _ in range(2)])
    # Same persona and model: the default labels are told apart.
    assert [c.label for c in both.columns] == ["Chat · gpt-4o-mini (A)", "Chat · gpt-4o-mini (B)"]
    both.send("hello")
    assert [c.state for c in finished(both).columns] == ["done", "done"]


def test_a_column_changes_settings_and_backend_between_messages(gates: list[threading.Event]) -> None:
    gate = threading.Event()
    gates.append(gate)
    a, b = column("one"), column(ScriptedReply(text="uno", gate=gate))
    comparison = Comparison([a, b], model_table=PRICES)
    comparison.send("first")
    with pytest.raises(ConversationStateError, match="Column B is still replying"):
        comparison.update_settings(1, model="gpt-4.1-mini")
    gate.set()
    finished(comparison)
    comparison.update_settings(1, model="gpt-4.1-mini", context_budget=2000)
    view = comparison.snapshot()
    assert (view.columns[1].model, view.columns[1].context_budget) == ("gpt-4.1-mini", 2000)
    with pytest.raises(ConversationStateError, match="ScriptedBackend is not thread-safe"):
        comparison.use_backend(ScriptedBackend())
    comparison.use_backend(OfflineBackend())
    comparison.send("second")
    view = finished(comparison)
    assert all(c.text.startswith("[Offline model]") for c in view.columns)
    assert [c.figures.usage_source for c in view.columns] == ["local", "local"]
    assert b.session.conversation.turns[-1].model == "gpt-4.1-mini"


# --- Blind mode and votes -----------------------------------------------------------------------


def test_blind_mode_hides_the_labels_until_a_pick_and_the_leaderboard_counts_wins() -> None:
    a = column("Duck answer.", "Second duck answer.", persona="foodie", model="gpt-4o-mini", label="Foodie")
    b = column("Tutor answer.", "Second tutor answer.", persona="tutor", model="gpt-4.1-mini", label="Tutor")
    comparison = Comparison([a, b], blind=True, model_table=PRICES)
    with pytest.raises(ConversationStateError, match="Nothing has been asked"):
        comparison.pick(0)
    comparison.send("Peking duck?")
    view = finished(comparison)
    assert view.labels_hidden and view.can_pick
    assert [(c.label, c.persona_id, c.model, c.hidden) for c in view.columns] == [
        ("Answer A", None, None, True),
        ("Answer B", None, None, True),
    ]
    assert "Foodie" not in comparison.to_markdown() and "Answer A" in comparison.to_markdown()

    pick = comparison.pick(1)
    assert (pick.round, pick.column, pick.label, pick.persona_id, pick.model, pick.blind) == (
        1,
        1,
        "Tutor",
        "tutor",
        "gpt-4.1-mini",
        True,
    )
    assert [(c.persona_id, c.model) for c in pick.candidates] == [
        ("foodie", "gpt-4o-mini"),
        ("tutor", "gpt-4.1-mini"),
    ]
    view = comparison.snapshot()
    assert not view.labels_hidden and not view.can_pick
    assert [(c.label, c.persona_id, c.model) for c in view.columns] == [
        ("Foodie", "foodie", "gpt-4o-mini"),
        ("Tutor", "tutor", "gpt-4.1-mini"),
    ]
    with pytest.raises(ConversationStateError, match="already been picked"):
        comparison.pick(0)

    comparison.send("And the pancakes?")
    finished(comparison)
    second = comparison.pick(0)
    assert second.round == 2 and not second.blind  # the labels were already shown
    assert comparison.picks == (pick, second)

    records = {
        (row.contestant.persona, row.contestant.model): (row.wins, row.losses, row.ties)
        for row in leaderboard(votes_from_picks(comparison.picks)).ratings
    }
    assert records == {("foodie", "gpt-4o-mini"): (1, 1, 0), ("tutor", "gpt-4.1-mini"): (1, 1, 0)}


def test_a_blind_pair_keeps_its_random_order_over_turns_and_a_tie_reveals_it() -> None:
    orders = set()
    for seed in range(8):
        a = column("Duck.", persona="foodie", label="Foodie")
        b = column("Tutor.", persona="tutor", model="gpt-4.1-mini", label="Tutor")
        pair = Comparison.blind_pair(a, b, rng=random.Random(seed))
        orders.add(tuple(c.label for c in pair.columns))
    assert orders == {("Foodie", "Tutor"), ("Tutor", "Foodie")}  # either may be A

    a = column("Duck.", "More duck.", persona="foodie", budget=1000, label="Foodie")
    b = column("Tutor.", "More tutor.", persona="tutor", model="gpt-4.1-mini", label="Tutor")
    pair = Comparison.blind_pair(a, b, rng=random.Random(1), model_table=PRICES)
    pair.send("Peking duck?")
    finished(pair)
    pair.send("And the pancakes?")
    view = finished(pair)
    assert view.labels_hidden and view.can_pick  # two turns, still anonymous
    assert [len(c.turns) for c in view.columns] == [2, 2]  # each column kept its own history
    with pytest.raises(ConversationStateError, match="preferred"):
        pair.vote("tie", 0)
    vote = pair.vote("tie")
    assert (vote.outcome, vote.column, vote.model, vote.blind) == ("tie", None, None, True)
    assert {c.settings for c in vote.candidates} == {"budget 1,000 · reply cap 1,024 · drop_oldest"}
    assert not pair.snapshot().labels_hidden
    restored = Comparison.from_dict(pair.to_dict(), [OfflineBackend(), OfflineBackend()])
    assert restored.picks == (vote,)
    assert "tie" in pair.to_markdown()


def test_a_column_without_an_answer_cannot_be_picked() -> None:
    comparison = Comparison([column("fine"), column(ScriptedReply(error=RateLimited("429")))], blind=True)
    comparison.send("q")
    finished(comparison)
    with pytest.raises(ConversationStateError, match="Column B has no answer"):
        comparison.pick(1)
    assert comparison.labels_hidden
    with pytest.raises(ConversationStateError, match="no column 7"):
        comparison.pick(7)


# --- Exports -------------------------------------------------------------------------------------


def test_json_export_holds_every_column_and_reads_back() -> None:
    refusal = RateLimited("Slow down.", status_code=429, retry_after=3.0)
    a = column("First answer.", "Second answer.", label="Foodie")
    b = column(
        "Other first.", ScriptedReply(error=refusal), persona="tutor", model="gpt-4.1-mini", label="Tutor"
    )
    comparison = Comparison([a, b], model_table=PRICES)
    comparison.send("One?")
    finished(comparison)
    comparison.pick(0)
    comparison.send("Two?")
    finished(comparison)

    data = json.loads(comparison.to_json())
    assert data["format"] == "persona-dashboard/comparison" and data["version"] == 1
    assert [r["text"] for r in data["rounds"]] == ["One?", "Two?"]
    assert [(c["label"], c["persona_id"], c["model"]) for c in data["columns"]] == [
        ("Foodie", "foodie", "gpt-4o-mini"),
        ("Tutor", "tutor", "gpt-4.1-mini"),
    ]
    assert data["columns"][0]["conversation"] == a.session.conversation.to_dict()
    assert [run["state"] for run in data["columns"][1]["runs"]] == ["done", "failed"]
    assert data["columns"][1]["runs"][1]["error"]["retry_after"] == 3.0
    assert data["picks"][0]["label"] == "Foodie"

    restored = Comparison.from_dict(data, [ScriptedBackend(), ScriptedBackend().enqueue("Retried.")])
    view = restored.snapshot()
    assert [c.label for c in view.columns] == ["Foodie", "Tutor"]
    assert [c.state for c in view.columns] == ["done", "failed"]
    assert view.columns[0].text == "Second answer." and view.columns[1].can_retry
    assert restored.picks == comparison.picks and restored.rounds == comparison.rounds
    assert restored.to_markdown() == comparison.to_markdown()
    restored.retry(1)
    assert finished(restored).columns[1].text == "Retried."
    with pytest.raises(ConversationImportError, match="not a comparison export"):
        Comparison.from_dict({**data, "columns": data["columns"][:1]}, [ScriptedBackend()])
    backends = [ScriptedBackend(), ScriptedBackend()]
    with pytest.raises(ConversationImportError, match="column A has a run for message 2"):
        Comparison.from_dict({**data, "rounds": data["rounds"][:1]}, backends)
    with pytest.raises(ConversationImportError, match="names column 4 or message 1"):
        Comparison.from_dict({**data, "picks": [{**data["picks"][0], "column": 3}]}, backends)


def test_markdown_export_puts_the_answers_side_by_side_escaped() -> None:
    tricky = "Use a | pipe,\na new line, <script>alert(1)</script> & a \\| escaped pipe"
    a = column(tricky, "Plain.", label="Foodie | gpt-4o")
    b = column(ScriptedReply(error=RateLimited("Rate <limited>")), "Later.", label="Tutor")
    comparison = Comparison([a, b], model_table=PRICES)
    comparison.send("Question one\r\nwith two lines")
    finished(comparison)
    comparison.send("Question two")
    finished(comparison)
    markdown = comparison.to_markdown("Duck | test")
    lines = markdown.splitlines()
    assert lines[0] == "# Duck \\| test"
    assert lines[2] == "| # | Message | Foodie \\| gpt-4o | Tutor |"
    assert lines[4] == (
        "| 1 | Question one<br>with two lines | Use a \\| pipe,<br>a new line, "
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; a \\\\\\| escaped pipe | "
        "_(failed: RateLimited: Rate &lt;limited&gt;)_ |"
    )
    assert lines[5] == "| 2 | Question two | Plain. | Later. |"
    assert "<script>" not in markdown
    # Every table row keeps its column count: no cell's pipe or line break leaks.
    table = [line for line in lines if line.startswith("| ") and "Figures" not in line]
    assert {line.replace("\\|", "").count("|") for line in table[:4]} == {5}
    assert "| 1 | Tutor | failed: RateLimited |" in markdown


def test_markdown_cell_escaping() -> None:
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_cell("a\\|b") == "a\\\\\\|b"  # the backslash stays literal and the pipe escaped
    assert markdown_cell("x\r\ny\rz\nw") == "x<br>y<br>z<br>w"
    assert markdown_cell("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert markdown_cell("&amp;") == "&amp;amp;"


# --- Over HTTP, against the local OpenAI-compatible server -------------------------------------


def test_three_columns_over_http_one_faulting() -> None:
    """A and B share one OpenAIBackend (its SDK client is thread-safe) on one server that streams
    slowly; C talks to a server of its own whose first answer is a 429."""
    with running_server() as shared_server, running_server() as faulty_server:
        shared_server.chunk_delay = 0.02
        faulty_server.fail(429, "Rate limit reached.", type="requests", headers={"Retry-After": "7"})
        shared = OpenAIBackend("sk-test", shared_server.base_url, max_retries=0)
        own = OpenAIBackend("sk-test", faulty_server.base_url, max_retries=0)

        def http_column(backend: OpenAIBackend, model: str) -> Column:
            settings = ChatSettings(model=model, context_budget=4000)
            return Column(ChatSession(Conversation(SYSTEM, settings, persona_id="foodie"), backend))

        columns = [
            http_column(shared, "gpt-4o-mini"),
            http_column(shared, "gpt-4.1-mini"),
            http_column(own, "gpt-4o"),
        ]
        comparison = Comparison(columns, model_table=PRICES)
        question = "How should I eat Peking duck, with pancakes, scallions and sauce, at home tonight?"
        comparison.send(question)
        view = finished(comparison)

        assert [c.state for c in view.columns] == ["done", "done", "failed"]
        for streamed in view.columns[:2]:
            figures = streamed.figures
            assert streamed.text == f"You said: {question}"
            assert figures.usage_source == "server"
            assert figures.prompt_tokens_reported == figures.prompt_tokens_counted
            assert figures.reply_tokens_reported == figures.reply_tokens_counted
            assert figures.cost_usd is not None and figures.cost_usd > 0
        fa, fb = view.columns[0].figures, view.columns[1].figures
        assert fa.time_to_first_token_s < fb.last_token_s and fb.time_to_first_token_s < fa.last_token_s
        assert sorted(r.body["model"] for r in shared_server.chat_requests) == ["gpt-4.1-mini", "gpt-4o-mini"]

        failed = view.columns[2]
        assert isinstance(failed.error, RateLimited) and failed.text == ""
        info = failed.figures.error
        assert info is not None and (info.status_code, info.retry_after) == (429, 7.0)
        assert "Rate limit reached" in info.message and "sk-test" not in info.message

        comparison.retry(2)
        view = finished(comparison)
        assert view.columns[2].state == "done" and view.columns[2].text == f"You said: {question}"
        assert len(faulty_server.chat_requests) == 2 and len(shared_server.chat_requests) == 2


# --- Saved while streaming -------------------------------------------------------------------------


def test_a_comparison_written_while_it_streams_reads_back_with_each_answer_interrupted(
    gates: list[threading.Event],
) -> None:
    """`to_dict` mid-stream writes what a crash would leave: the question pending in a column with
    no text yet, a column's text so far as an interrupted answer; each retries on its own."""
    a_steps, b_gate = Steps(allowed=2), threading.Event()
    gates += [a_steps, b_gate]
    a = column(ScriptedReply(chunks=["Half ", "an ", "answer"], gate=a_steps))
    b = column(ScriptedReply(chunks=["Never sent"], gate=b_gate))
    comparison = Comparison([a, b], model_table=PRICES)
    progress: list[bool] = []
    comparison.on_progress = progress.append
    comparison.send("Go")
    assert progress[0] is True  # once the question is in every column, before a call
    wait_until(comparison, lambda v: v.columns[0].text == "Half an ", "A streamed two chunks")
    assert False in progress  # a chunk: a draft the saver may throttle

    record = comparison.to_dict()
    json.dumps(record)  # as the store writes it
    restored = Comparison.from_dict(
        record, [ScriptedBackend().enqueue("A again"), ScriptedBackend().enqueue("B at last")]
    )
    first, second = restored.snapshot().columns
    assert first.state == "interrupted" and first.text == "Half an "
    assert first.messages[-1].interrupted and first.figures is not None
    assert first.figures.reply_id == first.messages[-1].id and first.can_retry
    assert second.state == "interrupted" and second.text == ""
    assert second.messages[-1].role == "user" and second.can_retry
    # The live comparison is untouched by the writing: it finishes, and says so.
    a_steps.allow(5)
    b_gate.set()
    assert [view.state for view in finished(comparison).columns] == ["done", "done"]
    assert progress[-1] is True  # a column ended: save now

    restored.retry(0)
    restored.retry(1)
    assert [(view.state, view.text) for view in finished(restored).columns] == [
        ("done", "A again"),
        ("done", "B at last"),
    ]
