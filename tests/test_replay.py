"""What-if replay: the record replayed under another budget, policy or model without calling a
model, side by side with what was recorded."""

from __future__ import annotations

import time

import pytest

from core.chat.context import summary_cap
from core.chat.conversation import Conversation, MessageState
from core.chat.replay import (
    STAND_IN_NOTE,
    Pacer,
    Scenario,
    compare,
    compare_policies,
    recorded,
    recorded_exchanges,
    replay,
)
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.counting.model_info import ModelInfo, ModelTable, load_model_table
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.errors import ServerError
from core.providers.backends import OpenAIBackend
from core.providers.offline import OfflineBackend
from core.providers.scripted import ScriptedBackend, ScriptedReply

PRICES = load_model_table()


def question(i: int) -> str:
    return f"Question {i}: what should I do on day {i} of the trip? " + "I like food and old towns. " * 6


def answer(i: int) -> str:
    return f"Day {i}: " + "walk the old town, eat hand-pulled noodles and take the river boat. " * 12


def recorded_session(turns: int = 30, budget: int = 64_000, **settings: object) -> ChatSession:
    """A conversation of `turns` exchanges, its answers billed as the API would."""
    backend = ScriptedBackend()
    options: dict[str, object] = {"model": "gpt-4o", "context_budget": budget, **settings}
    session = ChatSession(Conversation("You plan trips.", ChatSettings.model_validate(options)), backend)
    for i in range(turns):
        backend.enqueue(answer(i))
        list(session.send(question(i)))
    return session


def test_what_a_4k_budget_would_have_cost_and_what_the_model_would_have_forgotten():
    session = recorded_session(30)
    conversation = session.conversation
    assert conversation.prompt_tokens > 8_000 and not conversation.trim_events
    calls = len(session.backend.requests)

    whatif = compare(conversation, Scenario(budget=4_096), PRICES)

    assert len(session.backend.requests) == calls, "a replay calls no model"
    assert len(whatif.turns) == 30
    # What it would have cost: every call under 4k, and less in all.
    gpt_4o = PRICES.lookup("gpt-4o")
    assert gpt_4o is not None
    for row in whatif.turns:
        assert row.replayed.prompt_tokens <= 4_096
        assert row.recorded.cost == pytest.approx(
            gpt_4o.cost(row.recorded.prompt_tokens, row.recorded.completion_tokens)
        )
        assert row.replayed.cost == pytest.approx(
            gpt_4o.cost(row.replayed.prompt_tokens, row.replayed.completion_tokens)
        )
    assert whatif.recorded.cost == pytest.approx(sum(t.cost for t in whatif.recorded.turns))
    assert whatif.cost_difference < 0 and whatif.prompt_tokens_difference < 0
    assert whatif.cost_difference == pytest.approx(sum(row.cost_difference for row in whatif.turns))
    assert whatif.replayed.priced and whatif.recorded.priced
    # What it would have forgotten: the oldest exchanges, whole, named by their ids in the record.
    forgotten = whatif.replayed.forgotten
    assert forgotten[0].id == conversation.messages[1].id and forgotten[0].preview.startswith("Question 0")
    assert [ref.id for ref in forgotten] == [m.id for m in conversation.messages[1 : 1 + len(forgotten)]]
    assert whatif.forgotten_only_in_replay == forgotten  # the record forgot nothing
    assert [ref.id for row in whatif.turns for ref in row.replayed.dropped] == [ref.id for ref in forgotten]
    first_drop = next(row for row in whatif.turns if row.replayed.dropped)
    assert first_drop.recorded.prompt_tokens > 4_096 >= first_drop.replayed.prompt_tokens
    # Early turns, under 4k anyway, cost the same.
    assert whatif.turns[0].cost_difference == pytest.approx(0)


def test_replaying_the_recorded_settings_reproduces_the_record():
    session = recorded_session(16, budget=1_500)
    conversation = session.conversation
    pinned = next(m for m in conversation.context_messages() if m.role == "user")
    conversation.pin(pinned.id)
    backend = session.backend
    for i in range(16, 20):
        backend.enqueue(answer(i))
        list(session.send(question(i)))
    assert conversation.trim_events
    same = compare(conversation, Scenario(), PRICES)
    # A message pinned while in context was never reached by the policy before: pinned from the
    # start, the replay takes the same decisions.
    for row in same.turns:
        assert row.replayed.prompt_tokens == row.recorded.prompt_tokens
        assert row.replayed.dropped == row.recorded.dropped
    assert same.replayed.forgotten == same.recorded.forgotten and same.replayed.forgotten
    assert pinned.id not in {ref.id for ref in same.replayed.forgotten}
    assert same.cost_difference == pytest.approx(0)
    # The record's trims land on the turns they preceded.
    dropped = [ref.id for row in same.recorded.turns for ref in row.dropped]
    assert dropped == [i for event in conversation.trim_events for i in event.dropped]


def test_a_summarize_replay_uses_a_stand_in_summary_and_prices_it():
    conversation = recorded_session(30).conversation
    whatif = replay(
        conversation, Scenario(budget=4_096, policy="summarize", summarizer_model="gpt-4o-mini"), PRICES
    )
    assert whatif.policy == "summarize" and STAND_IN_NOTE in whatif.notes
    assert whatif.summarized and not whatif.forgotten
    folds = [row for row in whatif.turns if row.summarized]
    assert len(folds[0].summarized) >= 4, "never the first exchange alone"
    assert all(row.prompt_tokens <= 4_096 for row in whatif.turns)
    assert all(row.summary_tokens <= summary_cap(4_096) for row in whatif.turns)
    mini = PRICES.lookup("gpt-4o-mini")
    assert mini is not None
    for row in folds:
        assert row.summarizer_model == "gpt-4o-mini" and row.summarizer_prompt_tokens > 0
        assert row.summarizer_cost == pytest.approx(
            mini.cost(row.summarizer_prompt_tokens, row.summarizer_completion_tokens)
        )
        assert row.total_cost == pytest.approx(row.cost + row.summarizer_cost)
    assert whatif.summary.startswith("Summary (offline model):")
    assert whatif.cost == pytest.approx(sum(row.total_cost for row in whatif.turns))


def test_the_record_of_a_summarize_conversation_shows_its_summaries_and_their_cost():
    session = recorded_session(0, budget=700, context_policy="summarize")
    session.backend = OfflineBackend()
    for i in range(12):
        list(session.send(question(i)))
    conversation = session.conversation
    assert conversation.summary_events
    record = recorded(conversation, PRICES)
    folded = [ref.id for row in record.turns for ref in row.summarized]
    assert folded == [i for event in conversation.summary_events for i in event.folded]
    assert {ref.id for ref in record.summarized} == set(folded)
    rows = [row for row in record.turns if row.summarized]
    assert all(row.summarizer_prompt_tokens and row.summarizer_cost for row in rows)
    assert [row.summary_tokens for row in record.turns] == [
        turn.summary_tokens for turn in conversation.turns
    ]
    assert record.summary == conversation.summary.text
    # Dropping instead: what the summaries kept, the replay forgets.
    whatif = compare(conversation, Scenario(policy="drop_oldest"), PRICES)
    assert whatif.replayed.forgotten and not whatif.replayed.summarized
    summarized = {ref.id for ref in record.summarized}
    assert {ref.id for ref in whatif.kept_only_in_replay} <= summarized
    assert whatif.forgotten_only_in_replay
    assert {ref.id for ref in whatif.forgotten_only_in_replay} <= summarized


def test_unanswered_questions_and_regenerated_answers_are_left_out():
    backend = ScriptedBackend()
    session = ChatSession(
        Conversation("sys", ChatSettings(model="gpt-4o-mini", context_budget=10_000)), backend
    )
    backend.enqueue("first answer")
    list(session.send("first question"))
    backend.enqueue(ScriptedReply(error=ServerError("x", status_code=500)))
    with pytest.raises(ServerError):
        list(session.send("a question that failed"))
    backend.enqueue("a second answer")
    list(session.send("second question"))
    backend.enqueue("the regenerated answer")
    list(session.regenerate())
    conversation = session.conversation
    states = [m.state for m in conversation.messages]
    assert MessageState.UNANSWERED in states and MessageState.REPLACED in states
    found = recorded_exchanges(conversation)
    assert [(e.question.content, e.answer.content) for e in found] == [
        ("first question", "first answer"),
        ("second question", "the regenerated answer"),
    ]
    record = recorded(conversation, PRICES)
    assert record.other_calls == 1 and record.other_calls_cost > 0  # the answer since regenerated
    assert record.cost == pytest.approx(sum(t.cost for t in record.turns) + record.other_calls_cost)
    again = replay(conversation, Scenario(), PRICES)
    assert len(again.turns) == 2 and again.turns[1].messages_sent == 4


def test_another_models_tokenizer_and_price():
    conversation = recorded_session(5).conversation
    whatif = replay(conversation, Scenario(model="gpt-4"), PRICES)
    assert {row.model for row in whatif.turns} == {"gpt-4"} and whatif.model == "gpt-4"
    # The whole prompt of the last turn, counted with gpt-4's tokenizer (cl100k).
    last = whatif.turns[-1]
    assert last.prompt_tokens == count_prompt_tokens(
        [{"role": m.role, "content": m.content} for m in conversation.messages[: 2 * 5]], "gpt-4"
    )
    assert last.completion_tokens == tokenizer_for("gpt-4").count_text(answer(4))
    gpt_4 = PRICES.lookup("gpt-4")
    assert gpt_4 is not None and last.cost == pytest.approx(
        gpt_4.cost(last.prompt_tokens, last.completion_tokens)
    )


def test_a_model_without_a_price_is_reported_unpriced():
    conversation = recorded_session(3).conversation
    whatif = replay(conversation, Scenario(model="llama3.2"), PRICES)
    assert not whatif.priced and all(row.cost is None for row in whatif.turns) and whatif.cost == 0


def test_a_question_that_cannot_fit_the_budget_is_refused_and_the_replay_goes_on():
    backend = ScriptedBackend()
    session = ChatSession(
        Conversation("sys", ChatSettings(model="gpt-4o-mini", context_budget=100_000)), backend
    )
    for text in ("short question", "long question " + "word " * 400, "another short one"):
        backend.enqueue("ok")
        list(session.send(text))
    whatif = replay(
        session.conversation,
        Scenario(budget=200),
        ModelTable(
            {"gpt-4o-mini": ModelInfo(context_window=128_000, input_per_million=1, output_per_million=1)}
        ),
    )
    assert [row.refused for row in whatif.turns] == [False, True, False]
    refused = whatif.turns[1]
    assert refused.prompt_tokens == refused.completion_tokens == 0 and refused.cost == 0
    assert whatif.turns[2].prompt_tokens <= 200 and whatif.turns[2].messages_sent == 4


def test_the_replay_simulates_the_cache_as_the_server_reports_it(openai_server):
    """The same chat through the real SDK and the local server (OpenAI's cache rule), then
    replayed under its own settings: every turn's cached tokens are what the server reported."""
    backend = OpenAIBackend("sk-test", openai_server.base_url, max_retries=0)
    settings = ChatSettings(model="gpt-4o", context_budget=2_000, context_policy="stable_prefix")
    session = ChatSession(Conversation("You plan trips. " * 200, settings), backend)
    for i in range(14):
        list(session.send(question(i)))
    conversation = session.conversation
    reported = [turn.reported_cached_tokens for turn in conversation.turns]
    assert conversation.trim_events and sum(reported) > 0 and 0 in reported  # steps, and hits between

    whatif = compare(conversation, Scenario(policy="stable_prefix", cache_rule="openai"), PRICES)

    assert [row.replayed.cached_tokens for row in whatif.turns] == reported
    assert [row.recorded.cached_tokens for row in whatif.turns] == reported
    gpt_4o = PRICES.lookup("gpt-4o")
    assert gpt_4o is not None and gpt_4o.cached_input_per_million is not None
    for row in whatif.turns:
        assert row.replayed.cost == pytest.approx(
            gpt_4o.cost(
                row.replayed.prompt_tokens,
                row.replayed.completion_tokens,
                cached_tokens=reported[row.number - 1],
            )
        )
    assert whatif.replayed.cache_hit_rate == pytest.approx(sum(reported) / whatif.replayed.prompt_tokens)


def test_every_policy_is_compared_on_the_same_cache():
    session = recorded_session(40, budget=3_000)
    scenario = Scenario(budget=3_000, cache_rule="openai")
    outcomes = {o.policy: o for o in compare_policies(session.conversation, scenario, PRICES)}
    assert set(outcomes) == {"drop_oldest", "summarize", "stable_prefix"}
    drop, stable = outcomes["drop_oldest"], outcomes["stable_prefix"]
    # At the limit drop_oldest changes the prompt's start every turn; stable_prefix only now and then.
    assert stable.cache_hit_rate > 0.6 > drop.cache_hit_rate
    assert stable.cost is not None and drop.cost is not None and stable.cost < drop.cost
    by_prefix = compare_policies(session.conversation, Scenario(budget=3_000, cache_rule="prefix"), PRICES)
    # A plain prefix cache also serves what is shorter than OpenAI's 1,024 tokens or a 128 block.
    assert all(
        prefix.cached_tokens >= openai.cached_tokens
        for prefix, openai in zip(by_prefix, outcomes.values(), strict=True)
    )


def test_the_replay_is_what_a_straightforward_computation_of_each_call_gives():
    """Whatever makes the replay cheaper changes none of its figures: here each call under
    drop_oldest is worked out from scratch, the plain way: the newest whole exchanges that fit the
    budget with the system prompt and the question, counted message by message, and a plain
    prefix cache that compares each prompt, message by message, with the 16 before it."""
    session = recorded_session(40)
    conversation = session.conversation
    budget = 3_000
    result = replay(conversation, Scenario(budget=budget, policy="drop_oldest", cache_rule="prefix"), PRICES)

    tokenizer = tokenizer_for("gpt-4o")
    system = conversation.messages[0]
    found = recorded_exchanges(conversation)
    seen: list[list[tuple[str, int]]] = []
    kept_before = 0  # the first exchange the previous call still sent
    assert len(result.turns) == len(found) == 40
    for number, (row, item) in enumerate(zip(result.turns, found, strict=True)):
        first = 0
        while True:
            history = [m for e in found[first:number] for m in (e.question, e.answer)]
            sent = [system, *history, item.question]
            prompt = count_prompt_tokens([m.as_api_message() for m in sent], "gpt-4o")
            if prompt <= budget:
                break
            first += 1
        blocks = [(m.id, tokenizer.count_message(m.as_api_message())) for m in sent]
        shared = 0
        for earlier in seen[-16:]:
            common = 0
            for mine, theirs in zip(blocks, earlier, strict=False):
                if mine != theirs:
                    break
                common += 1
            shared = max(shared, sum(tokens for _, tokens in blocks[:common]))
        seen.append(blocks)
        assert (row.prompt_tokens, row.messages_sent, row.cached_tokens) == (prompt, len(sent), shared)
        dropped = [m.id for e in found[kept_before:first] for m in (e.question, e.answer)]
        assert [ref.id for ref in row.dropped] == dropped
        kept_before = first
    assert sum(bool(row.dropped) for row in result.turns) > 10  # the budget was tight
    assert 0 < result.cached_tokens < result.prompt_tokens


def test_the_policies_compared_reuse_the_scenarios_own_replay_unchanged():
    session = recorded_session(30, budget=3_000)
    scenario = Scenario(budget=2_000, cache_rule="openai")
    known = compare(session.conversation, scenario, PRICES).replayed
    assert known.policy == "drop_oldest"
    reused = compare_policies(session.conversation, scenario, PRICES, known=known)
    assert reused == compare_policies(session.conversation, scenario, PRICES)


def test_a_paced_replay_is_the_same_replay_paced_once_an_exchange():
    conversation = recorded_session(30, budget=3_000).conversation
    scenario = Scenario(budget=2_000, policy="summarize", cache_rule="openai")
    steps: list[float] = []
    assert replay(conversation, scenario, PRICES, pace=lambda: steps.append(time.perf_counter())) == replay(
        conversation, scenario, PRICES
    )
    assert len(steps) == 30
    assert compare(conversation, scenario, PRICES, pace=Pacer()) == compare(conversation, scenario, PRICES)


def work_in_steps(pace: Pacer, *, cpu_s: float) -> tuple[float, float]:
    """Busy steps of 0.3 ms with `pace` between them until `cpu_s` of CPU is spent: (wall, CPU)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu < cpu_s:
        step_ends = time.perf_counter() + 0.0003
        while time.perf_counter() < step_ends:
            pass
        pace()
    return time.perf_counter() - wall, time.thread_time() - cpu


def test_a_pacer_rests_only_while_someone_else_is_working():
    """Alone on the server a replay works straight through: 0.1 s of steps take well under the
    1 s a tenth-share pacer would make of them when contended."""
    asked: list[bool] = []

    def nobody_else() -> bool:
        asked.append(True)
        return False

    wall, _ = work_in_steps(Pacer(slice_s=0.0005, share=0.1, contended=nobody_else), cpu_s=0.1)
    assert wall < 0.5
    assert len(asked) > 50  # it asked at every slice


def test_a_pacer_works_at_most_its_share_of_the_time():
    """Between short steps (a replay's exchanges) it rests, so the work takes a fifth of the time
    at most and other threads have the interpreter the rest (more when the machine is busy)."""
    wall, cpu = work_in_steps(Pacer(slice_s=0.002, share=0.2), cpu_s=0.1)
    assert cpu / wall <= 0.25, (cpu, wall)
