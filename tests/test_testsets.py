"""Test sets (core/compare/testsets.py): prompts from text, CSV and YAML; a run against several columns
with the real SDK over HTTP against the local server and on the offline model; a failing column
or a refused prompt fails alone; cancel; and the difference against the last run after a
persona's system prompt changes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.compare.comparison import Column
from core.compare.leaderboard import leaderboard, votes_from_picks
from core.compare.testsets import (
    MAX_PROMPTS,
    TestRunRecord,
    TestSet,
    TestSetRun,
    compare_runs,
    parse_test_set,
)
from core.counting.tokens import get_encoding
from core.errors import ConversationStateError, RateLimitedLocally, TestSetError
from core.providers.backends import OpenAIBackend
from core.providers.offline import OfflineBackend
from core.store.database import Store
from core.store.workspace import Workspace
from tests.openai_server import OpenAIServer

PROMPTS = ("北京烤鸭怎么吃？", "What is a good ramen?", "Name one spice 🌶️")
TIMEOUT = 20.0


# --- parsing ------------------------------------------------------------------------------------


def test_prompts_from_text_csv_and_yaml() -> None:
    text = parse_test_set("menus", "北京烤鸭怎么吃？\n\n  What is a good ramen?  \n".encode(), "menus.txt")
    assert text.prompts == ("北京烤鸭怎么吃？", "What is a good ramen?")
    with_header = parse_test_set("m", b'id,prompt\n1,"Hello, there"\n2,Second\n', "set.csv")
    assert with_header.prompts == ("Hello, there", "Second")
    no_header = parse_test_set("m", b"First\nSecond\n", "set.CSV")
    assert no_header.prompts == ("First", "Second")
    listed = parse_test_set("m", "- one\n- 两个\n- 3\n".encode(), "set.yaml")
    assert listed.prompts == ("one", "两个", "3")
    named = parse_test_set("m", b"name: Regressions\nprompts: [a, b]\n", "set.yml")
    assert (named.name, named.prompts) == ("Regressions", ("a", "b"))


@pytest.mark.parametrize(
    ("data", "filename", "reason"),
    [
        (b"\xff\xfe\x00bad", "set.txt", "not_utf8"),
        (b"\n \n", "set.txt", "invalid"),
        (b"a: [unclosed", "set.yaml", "invalid"),
        (b"just: a mapping\n", "set.yaml", "invalid"),
        ("\n".join(f"p{n}" for n in range(MAX_PROMPTS + 1)).encode(), "set.txt", "invalid"),
        (b"x" * 1_000_001, "set.txt", "too_large"),
    ],
)
def test_unusable_files_get_a_clear_error(data: bytes, filename: str, reason: str) -> None:
    with pytest.raises(TestSetError) as caught:
        parse_test_set("m", data, filename)
    assert caught.value.reason == reason
    assert filename in str(caught.value)


# --- running ------------------------------------------------------------------------------------


def http_columns(server: OpenAIServer, models: tuple[str, ...]) -> list[Column]:
    backend = OpenAIBackend("sk-test", server.base_url, max_retries=0)
    return [
        Column(
            ChatSession(
                Conversation(
                    "You are terse.", ChatSettings(model=m, context_budget=4000), persona_id="foodie"
                ),
                backend,
            )
        )
        for m in models
    ]


def test_a_set_runs_every_prompt_in_every_column_over_http(openai_server: OpenAIServer) -> None:
    run = TestSetRun(
        TestSet(name="menus", prompts=PROMPTS), lambda: http_columns(openai_server, ("m1", "m2"))
    )
    run.start()
    assert run.wait(TIMEOUT)
    record = run.result()
    assert run.progress() == (3, 3)
    assert [spec.model for spec in record.columns] == ["m1", "m2"]
    assert len(record.cells) == 6 and not record.cancelled
    for cell in record.cells:
        assert cell.answer == f"You said: {PROMPTS[cell.prompt]}"
        assert cell.error is None and cell.prompt_tokens and cell.reply_tokens
        assert cell.latency_s is not None and cell.latency_s >= 0
    # Each prompt is a fresh conversation: the system prompt and the prompt, nothing else.
    requests = openai_server.chat_requests
    assert len(requests) == 6
    assert all(len(request.messages) == 2 for request in requests)


def test_a_failing_column_and_a_refused_prompt_fail_alone(openai_server: OpenAIServer) -> None:
    openai_server.fail(429, "Rate limit reached.", type="requests")

    def refuse_the_second(prompt: str, columns: Sequence[Column]) -> None:
        assert len(columns) == 2
        if prompt == PROMPTS[1]:
            raise RateLimitedLocally(
                "Too many requests.", retry_after=30, limit="RATE_LIMIT_REQUESTS_PER_MIN"
            )

    test_set = TestSet(name="menus", prompts=PROMPTS)
    run = TestSetRun(
        test_set,
        lambda: http_columns(openai_server, ("m1", "m2")),
        max_parallel=1,
        before_each=refuse_the_second,
    )
    run.start()
    assert run.wait(TIMEOUT)
    record = run.result()
    failed = [cell for cell in record.cells if cell.error is not None]
    refused = [cell for cell in failed if cell.error and cell.error.kind == "RateLimitedLocally"]
    assert {(cell.prompt, cell.column) for cell in refused} == {(1, 0), (1, 1)}
    server_failures = [cell for cell in failed if cell.error and cell.error.kind == "RateLimited"]
    assert len(server_failures) == 1 and server_failures[0].prompt == 0
    answered = [cell for cell in record.cells if cell.error is None]
    assert len(answered) == 3
    assert len(openai_server.chat_requests) == 4  # the refused prompt was never sent


def test_cancel_stops_what_streams_and_skips_the_rest(openai_server: OpenAIServer) -> None:
    openai_server.chunk_delay = 0.2
    prompts = tuple(f"Question {n} about noodles and dumplings" for n in range(6))
    run = TestSetRun(TestSet(name="slow", prompts=prompts), lambda: http_columns(openai_server, ("m1", "m2")))
    run.start()
    deadline = time.monotonic() + TIMEOUT
    while not openai_server.chat_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    run.cancel()
    assert run.wait(TIMEOUT)
    record = run.result()
    assert record.cancelled
    assert sum(cell.skipped for cell in record.cells) >= 2 * (len(prompts) - 2)
    assert len(openai_server.chat_requests) <= 2 * 2  # at most the prompts in flight


def test_the_next_run_after_an_edit_shows_what_changed() -> None:
    backend = OfflineBackend()
    system = {"prompt": "You are a food critic."}

    def columns() -> list[Column]:
        settings = ChatSettings(model="gpt-4o-mini", context_budget=4000)
        return [
            Column(ChatSession(Conversation(system["prompt"], settings, persona_id="critic"), backend)),
            Column(ChatSession(Conversation("You are a tutor.", settings, persona_id="tutor"), backend)),
        ]

    test_set = TestSet(name="menus", prompts=PROMPTS)
    first = TestSetRun(test_set, columns)
    first.start()
    assert first.wait(TIMEOUT)
    same = TestSetRun(test_set, columns)
    same.start()
    assert same.wait(TIMEOUT)
    unchanged = compare_runs(first.result(), same.result())
    assert len(unchanged) == 6 and not any(change.answer_changed for change in unchanged)
    assert all(change.prompt_tokens_delta == 0 for change in unchanged)

    system["prompt"] = "You are a food critic who answers in one short sentence, always in Chinese."
    edited = TestSetRun(test_set, columns)
    edited.start()
    assert edited.wait(TIMEOUT)
    changes = [c for c in compare_runs(first.result(), edited.result()) if c.column == "critic · gpt-4o-mini"]
    others = [c for c in compare_runs(first.result(), edited.result()) if c.column != "critic · gpt-4o-mini"]
    assert len(others) == 3 and not any(c.answer_changed or c.prompt_tokens_delta for c in others)
    encoding = get_encoding("o200k_base")
    added = len(encoding.encode(system["prompt"])) - len(encoding.encode("You are a food critic."))
    assert [change.prompt for change in changes] == list(PROMPTS)
    assert all(change.prompt_tokens_delta == added for change in changes)
    assert all(change.answer_changed for change in changes)  # the offline model reports its prompt size
    assert all(change.cost_delta_usd is not None and change.cost_delta_usd > 0 for change in changes)


# --- votes, storage and the leaderboard -----------------------------------------------------------


def finished_run(columns: Callable[[], list[Column]]) -> TestRunRecord:
    run = TestSetRun(TestSet(name="menus", prompts=PROMPTS), columns)
    run.start()
    assert run.wait(TIMEOUT)
    return run.result()


def offline_columns() -> list[Column]:
    backend = OfflineBackend()
    critic = Conversation("You are a critic.", ChatSettings(model="gpt-4o-mini", context_budget=4000))
    tutor = Conversation("You are a tutor.", ChatSettings(model="gpt-4.1", context_budget=2000))
    critic.persona_id, tutor.persona_id = "critic", "tutor"
    return [Column(ChatSession(critic, backend)), Column(ChatSession(tutor, backend))]


def test_votes_on_results_become_leaderboard_picks_and_are_stored(tmp_path: Path) -> None:
    record = finished_run(offline_columns)
    with pytest.raises(ConversationStateError, match="preferred"):
        record.vote(0, "tie", 1)
    voted = record.vote(0, "preferred", 1).vote(1, "tie").vote(0, "preferred", 0)  # changed its mind
    assert [(v.prompt, v.outcome, v.column) for v in voted.votes] == [(0, "preferred", 0), (1, "tie", None)]
    assert record.votes == ()  # records are values
    picks = voted.picks()
    assert [(p.round, p.outcome, p.persona_id) for p in picks] == [
        (1, "preferred", "critic"),
        (2, "tie", None),
    ]
    assert picks[0].candidates[1].settings == "budget 2,000 · reply cap 1,024 · drop_oldest"
    board = {row.contestant.persona: row for row in leaderboard(votes_from_picks(picks)).ratings}
    assert (board["critic"].wins, board["critic"].ties, board["tutor"].losses) == (1, 1, 1)

    with Store.from_environ({"DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.db'}"}) as store:
        workspace = Workspace(store, "alice")
        workspace.save_test_set(voted.test_set)
        workspace.save_test_run(record)
        workspace.save_test_run(voted)  # the same run, voted on: replaced, not added
        assert workspace.test_sets() == [voted.test_set]
        assert workspace.test_runs("menus") == [voted]
        # Each prompt's vote is its own conversation's (a new vote on it replaced the last).
        assert [[p.id for p in got] for got in workspace.picks_by_conversation()] == [[p.id] for p in picks]
        assert Workspace(store, "bob").test_runs() == []
