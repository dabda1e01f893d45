"""What-if replay: a conversation's recorded exchanges under another budget, policy or model,
computed without calling any model, side by side with what was recorded.

    whatif = compare(conversation, Scenario(budget=4_096), load_model_table())
    whatif.cost_difference                      # what a 4k budget would have saved (negative) or cost
    whatif.replayed.forgotten                   # what the model would no longer have seen at the end
    [row.replayed.prompt_tokens for row in whatif.turns]

The replay reads the record: the user/assistant exchanges in order (a question that was never
answered and an answer that was regenerated are left out; the answer that replaced it is kept),
and sends each question through a fresh `Conversation` fitted by the scenario's policy, so what
it drops or summarizes is exactly what that policy would have done. The answers are the recorded
ones (their completion tokens as billed, recounted when the scenario's model counts differently).
Messages pinned now are pinned from the start.

A summarize policy needs summaries: the replay uses the offline model's deterministic summary
(`core.chat.summaries.offline_summary`), which fills the room the policy gives it, as a stand-in sized
like a real summary, and says so in `notes`; its summarizer calls are priced as if a model had
written it (the request's prompt tokens and the stand-in's tokens).

Everything returned is plain frozen dataclasses of numbers and text: ready to table or chart.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from core.chat.context import Completion, policy_named
from core.chat.conversation import Conversation, Message, MessageState, Turn
from core.chat.prompt_cache import CACHE_RULES, CacheRuleName, PromptCache, prompt_messages
from core.chat.settings import POLICY_NAMES, ChatSettings, PolicyName
from core.chat.summaries import offline_summary
from core.counting.model_info import ModelTable
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.errors import PromptTooLong, ReplayTooLarge
from core.providers.backends import Usage

STAND_IN_NOTE: Final = (
    "Summaries in this replay are the offline model's stand-in (one line per folded message, "
    "filling the room the policy gives it), not a real model's; the summarizer's cost is estimated "
    "from its request and that stand-in."
)

#: The longest conversation a what-if replays: the replay runs on the server's CPU, in the
#: visitor's script thread (50,001 messages took 9 s and slowed another visitor from 2.0 to 3.8 s;
#: here 501 messages took 1.1 s to replay dropping and 3.4 s summarizing, 201 took 0.24 and 0.72 s).
MAX_REPLAY_MESSAGES = 400

#: Python runs one thread at a time, so a replay left to run straight through holds every other
#: visitor's script run and the server's event loop back until it ends. The server's replays
#: (`VisitorService.replay`) rest after each REPLAY_SLICE_S of work, so that they work at most
#: REPLAY_SHARE of the time while another visitor's script runs (`contended`): another visitor's
#: chat turn was 5% slower at p50 (2% at p95) while a visitor replayed 399 messages back to back,
#: What if views taking a median 0.25 s; unpaced, 53% slower; resting always, 4% slower but every
#: view 4.3 s, also for a visitor alone on the server (benchmarks/whatif_load.py; README).
REPLAY_SLICE_S: Final = 0.0005
REPLAY_SHARE: Final = 0.1


def always() -> bool:
    """Rest whoever else is running (tests and tools that cannot tell)."""
    return True


class Pacer:
    """Called between the steps of a long computation: once `slice_s` has passed since its last
    rest, it sleeps, letting other threads run, long enough that the work has taken at most
    `share` of the time, if `contended()` says someone else's work is running; otherwise it
    works on. Steps must be short (a replay's step is one exchange)."""

    def __init__(
        self,
        slice_s: float = REPLAY_SLICE_S,
        share: float = REPLAY_SHARE,
        contended: Callable[[], bool] = always,
    ) -> None:
        self.slice_s = slice_s
        self._rest_per_work = (1 - share) / share
        self._contended = contended
        self._since = time.perf_counter()

    def __call__(self) -> None:
        worked = time.perf_counter() - self._since
        if worked >= self.slice_s:  # a step that ran past the slice is rested for in full
            if self._contended():
                time.sleep(worked * self._rest_per_work)
            self._since = time.perf_counter()


def unpaced() -> None:
    """No rest between steps: a replay run where nobody waits for the interpreter (tests, tools)."""


@dataclass(frozen=True)
class Scenario:
    """What to change; None keeps what each turn recorded (or the conversation's setting)."""

    budget: int | None = None
    policy: PolicyName | None = None
    #: Counts with this model's tokenizer and prices with its price.
    model: str | None = None
    #: Who would have written summaries (policy "summarize"); None: the conversation's setting.
    summarizer_model: str | None = None
    #: The prompt cache the replayed calls are served from (`core.chat.prompt_cache`): OpenAI's rule
    #: (1,024 tokens on, blocks of 128), a plain prefix cache (llama.cpp, vLLM), or None: none.
    cache_rule: CacheRuleName | None = None


@dataclass(frozen=True)
class Exchange:
    """One recorded question and the answer that stands, with the turn that produced it."""

    question: Message
    answer: Message
    turn: Turn | None


@dataclass(frozen=True)
class MessageRef:
    """A message named in a replay: its id in the conversation, role, first words and tokens."""

    id: str
    role: str
    preview: str
    #: Prompt tokens it takes, counted with the replay's tokenizer.
    tokens: int


@dataclass(frozen=True)
class ReplayTurn:
    """One exchange's call, as recorded or as replayed."""

    #: 1, 2, 3, … over the exchanges (a regenerated answer's call is not one).
    number: int
    #: The recorded turn this exchange's answer came from (None: none recorded).
    recorded_turn: int | None
    question_id: str
    answer_id: str
    model: str
    budget: int
    #: Prompt tokens as billed (recorded) or counted (replayed); 0 when the call was refused.
    prompt_tokens: int
    #: Of which served from the server's prompt cache: as reported (recorded) or simulated with
    #: the scenario's rule (replayed); and written to it (as reported; Anthropic bills writes).
    #: Of which the running summary's message.
    summary_tokens: int
    pinned_tokens: int
    messages_sent: int
    completion_tokens: int
    #: Messages taken out before this call: dropped, or folded into the summary.
    dropped: tuple[MessageRef, ...] = ()
    summarized: tuple[MessageRef, ...] = ()
    #: The policy dropped instead of summarizing, and why.
    fallback: str | None = None
    #: The prompt could not fit the budget (pinned messages and the question alone exceed it):
    #: the call would have been refused and its answer never given.
    refused: bool = False
    #: US dollars for the call, cached tokens at the cached price (None: the model has no price).
    cost: float | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    summarizer_model: str | None = None
    summarizer_prompt_tokens: int = 0
    summarizer_completion_tokens: int = 0
    summarizer_cost: float | None = None

    @property
    def total_cost(self) -> float | None:
        """The call and its summarizer calls (None when either's price is unknown)."""
        if self.cost is None or (self.summarizer_prompt_tokens and self.summarizer_cost is None):
            return None
        return self.cost + (self.summarizer_cost or 0.0)


@dataclass(frozen=True)
class Replay:
    """A conversation's calls, recorded (`recorded`) or replayed under a scenario."""

    #: What the calls were made with: budget/model None when they varied between turns.
    budget: int | None
    policy: PolicyName | None
    model: str | None
    turns: tuple[ReplayTurn, ...]
    #: Messages out of the model's context after the last call: dropped (forgotten entirely)
    #: and folded into the summary (kept only as the summary says).
    forgotten: tuple[MessageRef, ...]
    summarized: tuple[MessageRef, ...]
    #: The summary's text after the last call ("" when none).
    summary: str = ""
    #: Calls that are not one of the exchanges (answers since regenerated), recorded only.
    other_calls: int = 0
    other_calls_cost: float = 0.0
    notes: tuple[str, ...] = ()
    #: True when every call's model had a price; the costs are then complete.
    priced: bool = True

    @property
    def prompt_tokens(self) -> int:
        return sum(turn.prompt_tokens for turn in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(turn.completion_tokens for turn in self.turns)

    @property
    def cached_tokens(self) -> int:
        return sum(turn.cached_tokens for turn in self.turns)

    @property
    def cache_hit_rate(self) -> float:
        """The share of prompt tokens served from cache (0 with no prompt tokens)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def summarizer_tokens(self) -> int:
        return sum(t.summarizer_prompt_tokens + t.summarizer_completion_tokens for t in self.turns)

    @property
    def cost(self) -> float:
        """US dollars of every priced call, summarizer calls and other calls included."""
        return (
            sum(turn.cost or 0.0 for turn in self.turns)
            + sum(turn.summarizer_cost or 0.0 for turn in self.turns)
            + self.other_calls_cost
        )

    @property
    def refused(self) -> int:
        return sum(turn.refused for turn in self.turns)

    @property
    def max_prompt_tokens(self) -> int:
        return max((turn.prompt_tokens for turn in self.turns), default=0)


@dataclass(frozen=True)
class TurnComparison:
    number: int
    recorded: ReplayTurn
    replayed: ReplayTurn

    @property
    def prompt_tokens_difference(self) -> int:
        return self.replayed.prompt_tokens - self.recorded.prompt_tokens

    @property
    def cost_difference(self) -> float | None:
        before, after = self.recorded.total_cost, self.replayed.total_cost
        return None if before is None or after is None else after - before


@dataclass(frozen=True)
class ReplayComparison:
    """The record and a what-if replay of it, side by side."""

    scenario: Scenario
    recorded: Replay
    replayed: Replay
    turns: tuple[TurnComparison, ...]
    #: Dropped by the end of the replay but not of the record (where they are still in context,
    #: or folded into the summary).
    forgotten_only_in_replay: tuple[MessageRef, ...] = field(default=())
    #: Still in context at the end of the replay, but dropped or summarized in the record.
    kept_only_in_replay: tuple[MessageRef, ...] = field(default=())

    @property
    def cost_difference(self) -> float:
        """The replay's cost less the record's (negative: the scenario is cheaper)."""
        return self.replayed.cost - self.recorded.cost

    @property
    def prompt_tokens_difference(self) -> int:
        return self.replayed.prompt_tokens - self.recorded.prompt_tokens


# --- reading the record -----------------------------------------------------------------------


def recorded_exchanges(conversation: Conversation) -> list[Exchange]:
    """The recorded exchanges in order: each answer that stands and the question it answered.

    An unanswered question and a regenerated answer are left out; a reply that was interrupted
    or cut off stands (it was what the model saw next).
    """
    turn_of = {turn.reply_id: turn for turn in conversation.turns if turn.reply_id}
    found: list[Exchange] = []
    question: Message | None = None
    for message in conversation.messages[1:]:
        if message.role == "user":
            question = None if message.state is MessageState.UNANSWERED else message
        elif message.state is not MessageState.REPLACED and question is not None:
            found.append(Exchange(question, message, turn_of.get(message.id)))
            question = None
    return found


def recorded(conversation: Conversation, prices: ModelTable) -> Replay:
    """The record read as a replay: each exchange's call as it was billed, with what was dropped
    or summarized before it (every trim and summary event lands on the exchange it preceded)."""
    found = recorded_exchanges(conversation)
    refs = _Refs(conversation)
    numbers = [item.turn.number if item.turn is not None else None for item in found]
    # The exchanges with a recorded turn, by turn number (turns are recorded in order).
    numbered = sorted((number, index) for index, number in enumerate(numbers) if number is not None)
    keys = [number for number, _ in numbered]

    def row_for(turn_number: int) -> int | None:
        """The first exchange whose call came at or after `turn_number`."""
        position = bisect.bisect_left(keys, turn_number)
        return numbered[position][1] if position < len(numbered) else None

    dropped: list[list[str]] = [[] for _ in found]
    folded: list[list[str]] = [[] for _ in found]
    fallback: list[str | None] = [None for _ in found]
    summarizer: list[list[tuple[str | None, int, int]]] = [[] for _ in found]
    for trim in conversation.trim_events:
        if (index := row_for(trim.turn)) is not None:
            dropped[index] += trim.dropped
    for event in conversation.summary_events:
        if (index := row_for(event.turn)) is None:
            continue
        folded[index] += event.folded
        if event.fallback:
            fallback[index] = event.fallback_reason
        if event.calls:
            summarizer[index].append(
                (
                    event.summarizer_model,
                    event.summarizer_prompt_tokens or 0,
                    event.summarizer_completion_tokens or 0,
                )
            )

    rows: list[ReplayTurn] = []
    priced = True
    for index, item in enumerate(found):
        turn = item.turn
        model = turn.model if turn is not None else conversation.model
        prompt = turn.prompt_tokens if turn is not None else 0
        completion = turn.reply_tokens if turn is not None else item.answer.tokens
        cached = turn.cached_tokens if turn is not None else 0
        written = turn.cache_write_tokens if turn is not None else 0
        cost = _cost(prices, model, prompt, completion, cached=cached, written=written)
        summarizer_model = next((m for m, _, _ in summarizer[index] if m), None)
        summarizer_prompt = sum(p for _, p, _ in summarizer[index])
        summarizer_completion = sum(c for _, _, c in summarizer[index])
        summarizer_cost = (
            _cost(prices, summarizer_model, summarizer_prompt, summarizer_completion)
            if summarizer_model and (summarizer_prompt or summarizer_completion)
            else None
        )
        priced = priced and cost is not None and (summarizer_cost is not None or not summarizer_prompt)
        rows.append(
            ReplayTurn(
                number=index + 1,
                recorded_turn=turn.number if turn is not None else None,
                question_id=item.question.id,
                answer_id=item.answer.id,
                model=model,
                budget=turn.context_budget if turn is not None else conversation.context_budget,
                prompt_tokens=prompt,
                summary_tokens=turn.summary_tokens if turn is not None else 0,
                pinned_tokens=0,
                messages_sent=turn.messages_sent if turn is not None else 0,
                completion_tokens=completion,
                dropped=refs.many(dropped[index]),
                summarized=refs.many(folded[index]),
                fallback=fallback[index],
                cost=cost,
                cached_tokens=cached,
                cache_write_tokens=written,
                summarizer_model=summarizer_model,
                summarizer_prompt_tokens=summarizer_prompt,
                summarizer_completion_tokens=summarizer_completion,
                summarizer_cost=summarizer_cost,
            )
        )
    matched = {n for n in numbers if n is not None}
    others = [turn for turn in conversation.turns if turn.number not in matched]
    other_costs = [
        _cost(
            prices,
            t.model,
            t.prompt_tokens,
            t.reply_tokens,
            cached=t.cached_tokens,
            written=t.cache_write_tokens,
        )
        for t in others
    ]
    models = {row.model for row in rows}
    budgets = {row.budget for row in rows}
    summary = conversation.summary
    return Replay(
        budget=budgets.pop() if len(budgets) == 1 else None,
        policy=conversation.settings.context_policy,
        model=models.pop() if len(models) == 1 else None,
        turns=tuple(rows),
        forgotten=refs.many(m.id for m in conversation.messages if m.state is MessageState.TRIMMED),
        summarized=refs.many(m.id for m in conversation.messages if m.state is MessageState.SUMMARIZED),
        summary=summary.text if summary is not None else "",
        other_calls=len(others),
        other_calls_cost=sum(cost or 0.0 for cost in other_costs),
        priced=priced and all(cost is not None for cost in other_costs),
    )


# --- replaying ---------------------------------------------------------------------------------


def replay(
    conversation: Conversation, scenario: Scenario, prices: ModelTable, *, pace: Callable[[], None] = unpaced
) -> Replay:
    """The recorded exchanges replayed under `scenario`, without calling any model; `pace` is
    called before each exchange (a `Pacer` on a server). A conversation longer than
    MAX_REPLAY_MESSAGES raises ReplayTooLarge."""
    if len(conversation.messages) > MAX_REPLAY_MESSAGES:
        raise ReplayTooLarge(len(conversation.messages), MAX_REPLAY_MESSAGES)
    found = recorded_exchanges(conversation)
    settings = conversation.settings
    policy_name = scenario.policy or settings.context_policy
    policy = policy_named(policy_name)
    summarizer_model = scenario.summarizer_model or settings.effective_summarizer_model

    def settings_for(item: Exchange | None) -> ChatSettings:
        turn = item.turn if item is not None else None
        return settings.model_copy(
            update={
                "model": scenario.model or (turn.model if turn is not None else settings.model),
                "context_budget": scenario.budget
                or (turn.context_budget if turn is not None else settings.context_budget),
                "context_policy": policy_name,
                "summarizer_model": summarizer_model,
            }
        )

    first = settings_for(found[0] if found else None)
    replayed = Conversation(conversation.system_prompt, first, persona_id=conversation.persona_id)
    original_of: dict[str, str] = {}  # replayed message id -> the recorded message's id
    calls: list[tuple[int, int]] = []  # the summarizer calls of the current step

    def stand_in(messages: list[dict[str, str]]) -> Completion:
        tokenizer = tokenizer_for(summarizer_model)
        text = offline_summary(messages, tokenizer) or ""
        usage = Usage(
            prompt_tokens=count_prompt_tokens(messages, summarizer_model),
            completion_tokens=tokenizer.count_text(text),
        )
        calls.append((usage.prompt_tokens, usage.completion_tokens))
        return Completion(text, model=summarizer_model, usage=usage, usage_source="local")

    rows: list[ReplayTurn] = []
    priced = True
    summarized_any = False
    cache = PromptCache(CACHE_RULES[scenario.cache_rule]) if scenario.cache_rule else None
    for index, item in enumerate(found):
        pace()
        step = settings_for(item)
        if step != replayed.settings:
            replayed.update_settings(**step.model_dump())
        question = replayed.add_user(item.question.content, automatic=item.question.automatic)
        original_of[question.id] = item.question.id
        if item.question.pinned:
            replayed.pin(question.id)
        trims, summaries = len(replayed.trim_events), len(replayed.summary_events)
        calls.clear()
        refused = False
        try:
            policy.fit(replayed, complete=stand_in)
        except PromptTooLong:
            refused = True
        new_trims = replayed.trim_events[trims:]
        new_summaries = replayed.summary_events[summaries:]
        refs = _Refs(replayed, original_of)
        dropped = refs.many(i for trim in new_trims for i in trim.dropped)
        folded = refs.many(i for event in new_summaries for i in event.folded)
        fallback = next((e.fallback_reason for e in new_summaries if e.fallback), None)
        summarized_any = summarized_any or bool(folded)
        model = step.model
        if refused:
            prompt = completion = cached = 0
            summary_tokens = pinned = sent = 0
        else:
            prompt = replayed.prompt_tokens
            cached = cache.serve_messages(prompt_messages(replayed)) if cache is not None else 0
            summary_tokens, pinned = replayed.summary_tokens, replayed.pinned_tokens
            sent = len(replayed.api_messages())
            recorded_turn = item.turn
            if recorded_turn is not None and tokenizer_for(recorded_turn.model) == replayed.tokenizer:
                completion = recorded_turn.reply_tokens
            else:
                completion = replayed.tokenizer.count_text(item.answer.content)
            replayed.add_assistant(
                item.answer.content,
                Usage(prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached),
                usage_source="local",
                interrupted=item.answer.interrupted,
            )
            answer = replayed.messages[-1]
            original_of[answer.id] = item.answer.id
            if item.answer.pinned:
                replayed.pin(answer.id)
        cost = _cost(prices, model, prompt, completion, cached=cached)
        summarizer_prompt = sum(p for p, _ in calls)
        summarizer_completion = sum(c for _, c in calls)
        summarizer_cost = (
            _cost(prices, summarizer_model, summarizer_prompt, summarizer_completion) if calls else None
        )
        priced = priced and cost is not None and (summarizer_cost is not None or not calls)
        rows.append(
            ReplayTurn(
                number=index + 1,
                recorded_turn=item.turn.number if item.turn is not None else None,
                question_id=item.question.id,
                answer_id=item.answer.id,
                model=model,
                budget=step.context_budget,
                prompt_tokens=prompt,
                summary_tokens=summary_tokens,
                pinned_tokens=pinned,
                messages_sent=sent,
                completion_tokens=completion,
                dropped=dropped,
                summarized=folded,
                fallback=fallback,
                refused=refused,
                cost=cost,
                cached_tokens=cached,
                summarizer_model=summarizer_model if calls else None,
                summarizer_prompt_tokens=summarizer_prompt,
                summarizer_completion_tokens=summarizer_completion,
                summarizer_cost=summarizer_cost,
            )
        )
    final = _Refs(replayed, original_of)
    summary = replayed.summary
    return Replay(
        budget=scenario.budget,
        policy=policy_name,
        model=scenario.model,
        turns=tuple(rows),
        forgotten=final.many(m.id for m in replayed.messages if m.state is MessageState.TRIMMED),
        summarized=final.many(m.id for m in replayed.messages if m.state is MessageState.SUMMARIZED),
        summary=summary.text if summary is not None else "",
        notes=(STAND_IN_NOTE,) if summarized_any else (),
        priced=priced,
    )


def compare(
    conversation: Conversation, scenario: Scenario, prices: ModelTable, *, pace: Callable[[], None] = unpaced
) -> ReplayComparison:
    """The record and its replay under `scenario` (paced by `pace`), turn by turn, with what each
    forgot."""
    before = recorded(conversation, prices)
    after = replay(conversation, scenario, prices, pace=pace)
    dropped_before = {ref.id for ref in before.forgotten}
    out_after = {ref.id for ref in (*after.forgotten, *after.summarized)}
    refs = _Refs(conversation)
    return ReplayComparison(
        scenario=scenario,
        recorded=before,
        replayed=after,
        turns=tuple(TurnComparison(a.number, a, b) for a, b in zip(before.turns, after.turns, strict=True)),
        forgotten_only_in_replay=tuple(ref for ref in after.forgotten if ref.id not in dropped_before),
        kept_only_in_replay=refs.many(
            ref.id for ref in (*before.forgotten, *before.summarized) if ref.id not in out_after
        ),
    )


@dataclass(frozen=True)
class PolicyOutcome:
    """One policy's replay under a scenario: its prompt tokens, those served from cache, cost."""

    policy: PolicyName
    prompt_tokens: int
    cached_tokens: int
    cache_hit_rate: float
    #: US dollars, cached tokens at the cached price (None: a model without a price).
    cost: float | None
    #: Messages dropped (forgotten) by the end.
    forgotten: int


def compare_policies(
    conversation: Conversation,
    scenario: Scenario,
    prices: ModelTable,
    *,
    known: Replay | None = None,
    pace: Callable[[], None] = unpaced,
) -> tuple[PolicyOutcome, ...]:
    """The scenario replayed under every policy (paced by `pace`), each served from the same
    simulated prompt cache: what caching gives each, and what each costs. `known`: the
    scenario's own replay when already made (`compare`'s), which is not made again."""
    outcomes = []
    for name in POLICY_NAMES:
        if known is not None and known.policy == name:
            result = known
        else:
            result = replay(conversation, replace(scenario, policy=name), prices, pace=pace)
        outcomes.append(
            PolicyOutcome(
                policy=name,
                prompt_tokens=result.prompt_tokens,
                cached_tokens=result.cached_tokens,
                cache_hit_rate=result.cache_hit_rate,
                cost=result.cost if result.priced else None,
                forgotten=len(result.forgotten),
            )
        )
    return tuple(outcomes)


# --- internals ---------------------------------------------------------------------------------


class _Refs:
    """Names messages of `conversation` as `MessageRef`s of the recorded conversation's ids."""

    def __init__(self, conversation: Conversation, original_of: dict[str, str] | None = None) -> None:
        self._conversation = conversation
        self._original_of = original_of or {}

    def many(self, ids: Iterable[str]) -> tuple[MessageRef, ...]:
        return tuple(self.one(i) for i in ids)

    def one(self, message_id: str) -> MessageRef:
        message = self._conversation.message(message_id)
        original = self._original_of.get(message_id, message_id)
        return MessageRef(original, message.role, message.preview(), message.tokens)


def _cost(
    prices: ModelTable, model: str | None, prompt: int, completion: int, *, cached: int = 0, written: int = 0
) -> float | None:
    info = prices.lookup(model) if model else None
    if info is None:
        return None
    return info.cost(prompt, completion, cached_tokens=cached, cache_write_tokens=written)
