"""The application service holds every action of every view to the deployment's policy: the
allowed models (chat, compare columns and summarizer alike), the reply cap, the context budget,
the message size and the rate limits (per workspace and for the whole deployment). Proved against
the local OpenAI-compatible server, which counts what really arrives."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.chat import replay
from core.compare.testsets import TestSet
from core.counting.model_info import load_model_table
from core.errors import DashboardError, MessageTooLong, RateLimitedLocally
from core.personas.persona import Persona
from core.policy.limits import RateLimits
from core.providers.connection import Backends
from core.service import ColumnChoice, Deployment, VisitorService
from core.store.database import Store
from core.store.workspace import Workspace
from tests.openai_server import OpenAIServer

KEY = "sk-deployer-0123456789abcdef"
#: The issue's public deployment: one cheap model, small caps, 2 requests a minute.
LIMITS = {
    "ACCESS_MODE": "private",
    "ALLOWED_MODELS": "gpt-4o-mini",
    "MAX_REPLY_CAP": "100",
    "MAX_CONTEXT_BUDGET": "2048",
    "MAX_MESSAGE_CHARS": "200",
    "RATE_LIMIT_REQUESTS_PER_MIN": "2",
}
#: A persona asking for everything the deployment forbids.
GREEDY = Persona.model_validate(
    {
        "id": "greedy",
        "name": "Greedy",
        "avatar": "🤑",
        "description": "Wants the most expensive of everything.",
        "system_prompt": "You are thorough.",
        "model": "o1-pro",
        "context_budget": 2_000_000,
        "max_reply_tokens": 200_000,
        "context_policy": "summarize",
        "summarizer_model": "o1-pro",
    }
)
PERSONAS = {GREEDY.id: GREEDY}

MakeService = Callable[..., VisitorService]


@pytest.fixture
def make_service(openai_server: OpenAIServer, tmp_path: Path) -> Iterator[MakeService]:
    """`make_service(owner, **settings)`: a visitor's service on the deployer's key and the local
    server, with `settings` (default LIMITS) in the environment; services share one store and
    one set of process-wide rate limiters, as the browser sessions of one server do."""
    store = Store.from_environ({"DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.db'}"})
    rate_limits = RateLimits()

    def make(owner: str = "alice", **settings: str) -> VisitorService:
        environ = {
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": openai_server.base_url,
            "OPENAI_MAX_RETRIES": "0",
            **(settings or LIMITS),
        }
        service = VisitorService(
            Workspace(store, owner),
            Backends(),
            prices=load_model_table(),
            deployment=Deployment.from_settings({}, environ),
            rate_limits=rate_limits,
        )
        service.connect()
        return service

    yield make


def drain(chunks: Iterator[str]) -> str:
    return "".join(chunks)


def assert_within_limits(server: OpenAIServer, count: int) -> None:
    """Exactly `count` requests arrived, each on the allowed model with the capped reply."""
    requests = server.chat_requests
    assert len(requests) == count, [r.body.get("model") for r in requests]
    for request in requests:
        assert request.body["model"] == "gpt-4o-mini"
        cap = request.body.get("max_tokens", request.body.get("max_completion_tokens"))
        assert cap is not None and cap <= 100, request.body


def test_compare_holds_every_column_to_the_limits(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    """The issue's measurement: four columns typed to o1-pro with a 2,000,000 budget sent 12 calls
    with max_completion_tokens=200000 and a 5,010-character message. Now none goes out."""
    service = make_service()
    choices = [ColumnChoice("greedy", "o1-pro", 2_000_000)] * 4
    comparison = service.start_comparison(PERSONAS, choices, blind=False)
    assert comparison is not None
    for column in comparison.columns:
        settings = column.session.settings
        assert (settings.model, settings.context_budget, settings.max_reply_tokens) == (
            "gpt-4o-mini",
            2048,
            100,
        )
        assert settings.summarizer_model is None  # o1-pro may not write the summaries either
    assert [n.code for n in service.take_notices()].count("limit_applied") == 4 * 4
    with pytest.raises(MessageTooLong):
        service.compare_send("x" * 5_010)
    # Four columns are four requests: more than the 2 a minute allowed, so none is sent.
    with pytest.raises(RateLimitedLocally) as refused:
        service.compare_send("hello")
    assert refused.value.limit == "RATE_LIMIT_REQUESTS_PER_MIN"
    for _ in range(3):
        with pytest.raises(RateLimitedLocally):
            service.compare_send("hello again")
    assert openai_server.chat_requests == []


def test_compare_sends_and_retries_within_the_limits(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    service = make_service(**{**LIMITS, "RATE_LIMIT_REQUESTS_PER_MIN": "3"})
    comparison = service.start_comparison(
        PERSONAS, [ColumnChoice("greedy", "o1-pro", 2_000_000)] * 2, blind=False
    )
    assert comparison is not None
    openai_server.fail(500, "boom")
    service.compare_send("first")
    comparison.wait(timeout=30)
    assert_within_limits(openai_server, 2)
    failed = next(i for i, view in enumerate(comparison.snapshot().columns) if view.can_retry)
    service.compare_retry(failed)  # the third request of the minute
    comparison.wait(timeout=30)
    assert_within_limits(openai_server, 3)
    with pytest.raises(RateLimitedLocally):
        service.compare_send("second")
    assert_within_limits(openai_server, 3)


def test_every_chat_action_is_held_to_the_limits(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    service = make_service(**{**LIMITS, "RATE_LIMIT_REQUESTS_PER_MIN": "4"})
    key, session, notes = service.session_for(GREEDY)
    assert len(notes) == 4  # model, summarizer, reply cap, budget
    # Settings typed past the limits are brought back within them.
    settings, more = service.change_settings(
        key, model="o1-pro", context_budget=2_000_000, max_reply_tokens=9_999
    )
    assert (settings.model, settings.context_budget, settings.max_reply_tokens) == ("gpt-4o-mini", 2048, 100)
    assert len(more) == 3
    with pytest.raises(MessageTooLong):
        service.send(key, "y" * 201)
    assert session.conversation.pending_user_message is None  # too long: never added
    openai_server.reply("cut short", finish_reason="length")
    drain(service.send(key, "a question"))  # 1
    assert session.can_continue
    drain(service.continue_reply(key))  # 2
    drain(service.regenerate(key))  # 3
    openai_server.fail(500, "boom")
    with pytest.raises(DashboardError):
        drain(service.send(key, "fails"))  # 4
    assert_within_limits(openai_server, 4)
    with pytest.raises(RateLimitedLocally):
        drain(service.retry(key))  # the fifth request of the minute
    with pytest.raises(RateLimitedLocally):
        drain(service.send(key, "kept for later"))
    assert session.conversation.pending_user_message is not None
    assert_within_limits(openai_server, 4)
    # Each turn was saved under the id the conversation had from the start.
    assert service.workspace.is_saved(key)
    assert [s.id for s in service.workspace.list()] == [key]


def test_the_summarizer_is_held_to_the_allowed_models_and_the_rate(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    """The persona's summarizer_model (o1-pro) bypassed ALLOWED_MODELS; and a summary is a request
    on the deployer's key like any other."""
    service = make_service(**{**LIMITS, "MAX_CONTEXT_BUDGET": "300", "RATE_LIMIT_REQUESTS_PER_MIN": "20"})
    key, session, _ = service.session_for(GREEDY)
    assert session.settings.summarizer_model is None
    for number in range(5):  # the fifth no longer fits 300 tokens: the oldest exchanges are summarized
        drain(service.send(key, f"question {number}: " + "tell me more " * 8))
    summaries = [r for r in openai_server.chat_requests if "running summary" in r.messages[0]["content"]]
    assert summaries, "the policy never asked for a summary"
    assert_within_limits(openai_server, len(openai_server.chat_requests))


def test_a_summary_over_the_rate_limit_is_not_asked_for(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    service = make_service(**{**LIMITS, "MAX_CONTEXT_BUDGET": "300", "RATE_LIMIT_REQUESTS_PER_MIN": "5"})
    key, session, _ = service.session_for(GREEDY)
    for number in range(5):  # five requests: the summary the fifth needs would be the sixth
        drain(service.send(key, f"question {number}: " + "tell me more " * 8))
    assert_within_limits(openai_server, 5)
    assert not any("running summary" in r.messages[0]["content"] for r in openai_server.chat_requests)
    event = session.conversation.summary_events[-1]
    assert event.fallback and "Try again in" in (event.fallback_reason or "")  # dropped instead, said why


def test_the_rate_limit_holds_per_workspace_not_per_browser_session(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    """Five browser sessions of one visitor made 10 calls in 4.6 s; now they share one limit."""
    tabs = [make_service("alice") for _ in range(5)]
    sent = refused = 0
    for tab in tabs:
        key, _, _ = tab.session_for(GREEDY)
        for _ in range(2):
            try:
                drain(tab.send(key, "hi"))
                sent += 1
            except RateLimitedLocally:
                refused += 1
    assert (sent, refused) == (2, 8)
    assert_within_limits(openai_server, 2)
    # Another visitor has a limit of its own.
    bob = make_service("bob")
    key, _, _ = bob.session_for(GREEDY)
    drain(bob.send(key, "hi"))
    assert_within_limits(openai_server, 3)


def test_the_deployment_wide_limits_hold_across_visitors(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    settings = {**LIMITS, "RATE_LIMIT_REQUESTS_PER_MIN": "100", "RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN": "3"}
    for index in range(3):
        visitor = make_service(f"visitor-{index}", **settings)
        key, _, _ = visitor.session_for(GREEDY)
        drain(visitor.send(key, "hi"))
    late = make_service("late", **settings)
    key, _, _ = late.session_for(GREEDY)
    with pytest.raises(RateLimitedLocally) as refused:
        drain(late.send(key, "hi"))
    assert refused.value.limit == "RATE_LIMIT_DEPLOYMENT_REQUESTS_PER_MIN"
    assert "This deployment" in str(refused.value)
    assert_within_limits(openai_server, 3)


def test_tokens_per_day_hold_for_the_whole_deployment(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    # One turn expects about its prompt plus the 100-token reply cap: two fit in 300, three do not.
    settings = {**LIMITS, "RATE_LIMIT_REQUESTS_PER_MIN": "100", "RATE_LIMIT_TOKENS_PER_DAY": "300"}
    alice, bob = make_service("alice", **settings), make_service("bob", **settings)
    for visitor in (alice, bob):
        key, _, _ = visitor.session_for(GREEDY)
        drain(visitor.send(key, "hi"))
    key, _, _ = alice.session_for(GREEDY)
    with pytest.raises(RateLimitedLocally) as refused:
        drain(alice.send(key, "hi"))
    assert refused.value.limit == "RATE_LIMIT_TOKENS_PER_DAY"
    assert_within_limits(openai_server, 2)


def test_a_conversation_keeps_its_id_from_the_start(make_service: MakeService) -> None:
    service = make_service(**{**LIMITS, "RATE_LIMIT_REQUESTS_PER_MIN": "100"})
    key, _, _ = service.session_for(GREEDY)
    assert not service.workspace.is_saved(key)
    drain(service.send(key, "hi"))
    assert service.workspace.is_saved(key) and service.workspace.current["greedy"] == key
    assert service.store_problem is None


def test_the_offline_model_and_a_visitors_own_key_are_not_limited(make_service: MakeService) -> None:
    service = make_service()
    service.connect(typed_key="sk-visitor-own-key")
    assert service.limits is None
    _, session, notes = service.session_for(GREEDY)
    assert notes == [] and session.settings.model == "o1-pro"


# --- test sets and votes (issue 20) ---------------------------------------------------------------


def test_a_test_set_holds_every_column_and_prompt_to_the_limits(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    """Two columns typed to o1-pro with a 2,000,000 budget and three prompts, at 2 requests a
    minute: the first prompt goes out (two requests, on the allowed model with the capped reply),
    the next two are refused and recorded as refused; a prompt over the size limit stops the run
    before anything is sent."""
    service = make_service()
    choices = [ColumnChoice("greedy", "o1-pro", 2_000_000)] * 2
    with pytest.raises(MessageTooLong):
        service.start_test_set(PERSONAS, TestSet(name="long", prompts=("hi", "x" * 201)), choices)
    assert openai_server.chat_requests == []
    run = service.start_test_set(PERSONAS, TestSet(name="menus", prompts=("one", "two", "three")), choices)
    assert run.wait(20)
    record = service.finish_test_set()
    assert record is not None and service.test_run is None
    assert_within_limits(openai_server, 2)
    refused = {cell.prompt for cell in record.cells if cell.error and cell.error.kind == "RateLimitedLocally"}
    answered = {cell.prompt for cell in record.cells if cell.error is None}
    assert len(answered) == 1 and len(refused) == 2
    assert {spec.model for spec in record.columns} == {"gpt-4o-mini"}
    # Saved with its set, and a vote on it reaches the leaderboard's picks.
    assert [t.name for t in service.test_sets()] == ["menus"]
    voted = service.vote_on_test_result(record, min(answered), "preferred", 0)
    assert service.test_runs("menus") == [voted]
    assert [[p.outcome for p in picks] for picks in service.picks_by_conversation()] == [["preferred"]]


def test_a_blind_pair_is_held_to_the_limits_and_a_vote_is_saved(
    make_service: MakeService, openai_server: OpenAIServer
) -> None:
    service = make_service()
    pair = service.start_blind_pair(
        PERSONAS, ColumnChoice("greedy", "o1-pro", 2_000_000), ColumnChoice("greedy", "gpt-4.1", 900)
    )
    assert pair is not None and pair.labels_hidden and len(pair.columns) == 2
    service.compare_send("hello")
    assert pair.wait(20)
    assert_within_limits(openai_server, 2)
    service.compare_vote("both_bad")
    assert [[p.outcome for p in picks] for picks in service.picks_by_conversation()] == [["both_bad"]]
    assert not pair.labels_hidden


def test_the_views_reach_models_and_the_store_only_through_the_service() -> None:
    """No page imports a backend, the store or the workspace (ui/frame.py makes the service and
    hands it the process's store), and none calls what changes a conversation but the service."""
    root = Path(__file__).resolve().parent.parent
    views = sorted((root / "ui").glob("*.py")) + sorted((root / "app_pages").glob("*.py"))
    changes = re.compile(
        r"(?<!service)\.(send|retry|regenerate|continue_reply|update_settings|pin|edit_summary|save|"
        r"save_persona|save_comparison|delete|rename|restore|stream|add_user|add_imported|open)\("
    )
    # core.store: the database and the workspace; core.providers: every backend and connection.
    reaching = re.compile(r"^(from|import) core\.(store|providers)\b", re.M)
    for path in views:
        text = path.read_text(encoding="utf-8")
        assert not changes.search(text), f"{path.name}: {changes.search(text)}"
        assert ".workspace." not in text, path.name
        if path.name != "frame.py":
            assert not reaching.search(text), f"{path.name}: {reaching.search(text)}"


# --- what if (issue 17: bounded work) ------------------------------------------------------------


def test_what_if_replays_are_paced_and_run_one_at_a_time(make_service: MakeService) -> None:
    """A replay runs in the visitor's script thread, where it would hold the interpreter from
    every other visitor until it ended: it works a tenth of its time at most, and two visitors'
    replays run one after the other, so together they hold it no longer than one would
    (benchmarks/whatif_load.py measures what another visitor meets)."""
    visitors = []
    for owner in ("alice", "bob"):
        service = make_service(owner)
        key, session, _ = service.session_for(GREEDY)
        for i in range(60):
            session.conversation.add_user(f"question {i}: " + "which noodles, and where? " * 8)
            session.conversation.add_assistant(f"answer {i}: " + "hand-pulled, in Lanzhou. " * 8)
        visitors.append((service, key))

    service, key = visitors[0]
    wall, cpu = time.perf_counter(), time.thread_time()
    assert service.replay(key, replay.Scenario(budget=1_500, policy="drop_oldest")).replayed.forgotten
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert cpu / wall <= replay.REPLAY_SHARE + 0.1, (cpu, wall)

    together = threading.Barrier(2)
    spans: list[tuple[float, float]] = []

    def replay_after_the_other(service: VisitorService, key: str) -> None:
        together.wait()
        started = time.perf_counter()
        service.replay(
            key, replay.Scenario(budget=1_800, policy="drop_oldest")
        )  # not the kept one: made again
        spans.append((started, time.perf_counter()))

    threads = [threading.Thread(target=replay_after_the_other, args=visitor) for visitor in visitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    start = min(started for started, _ in spans)
    first, last = sorted(ended - start for _, ended in spans)
    assert last >= 1.6 * first, spans  # at once, both would end together
