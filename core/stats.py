"""The numbers the dashboard shows, computed from a Conversation's record: plain, testable data.

Every function here walks the record; `dashboard_figures` runs them once per version of a
conversation (a new message, turn, trim, pin or setting) and hands the same figures to every
rerun until the next change.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from core.chat.context import ContextPolicy
from core.chat.conversation import Conversation
from core.counting.calibration import SilentTruncation
from core.counting.model_info import ModelTable
from core.counting.tokens import REPLY_PRIMING

TURN_COLUMNS = [
    "turn",
    "counted_prompt_tokens",
    "reported_prompt_tokens",
    "cached_prompt_tokens",
    "difference",
    "reply_tokens",
    "context_budget",
    "summary_tokens",
    "messages_sent",
    "latency_s",
    "interrupted",
]
TRIM_COLUMNS = [
    "turn",
    "messages_dropped",
    "tokens_before",
    "tokens_after",
    "tokens_freed",
    "budget",
    "preview",
]


CONTEXT_COLUMNS = ["role", "tokens", "next call", "text"]

#: One table row as plain data: a column name -> a number, text, bool or None.
Row = dict[str, Any]


def turn_rows(conversation: Conversation) -> list[Row]:
    """One row per completed turn (TURN_COLUMNS). `difference` is reported minus counted (None
    without a report)."""
    return [
        {
            "turn": t.number,
            "counted_prompt_tokens": t.counted_prompt_tokens,
            "reported_prompt_tokens": t.reported_prompt_tokens,
            "cached_prompt_tokens": t.reported_cached_tokens,
            "difference": (
                t.reported_prompt_tokens - t.counted_prompt_tokens
                if t.reported_prompt_tokens is not None
                else None
            ),
            "reply_tokens": t.reply_tokens,
            "context_budget": t.context_budget,
            "summary_tokens": t.summary_tokens,
            "messages_sent": t.messages_sent,
            "latency_s": t.latency_s,
            "interrupted": t.interrupted,
        }
        for t in conversation.turns
    ]


def trim_rows(conversation: Conversation) -> list[Row]:
    """One row per trimming event (TRIM_COLUMNS), with a preview of the oldest messages it dropped."""
    return [
        {
            "turn": event.turn,
            "messages_dropped": len(event.dropped),
            "tokens_before": event.tokens_before,
            "tokens_after": event.tokens_after,
            "tokens_freed": event.tokens_freed,
            "budget": event.budget,
            "preview": " | ".join(
                f"{message.role}: {message.preview(40)}"
                for message in map(conversation.message, event.dropped[:2])
            )
            + (f" | … {len(event.dropped) - 2} more" if len(event.dropped) > 2 else ""),
        }
        for event in conversation.trim_events
    ]


def context_rows(conversation: Conversation, policy: ContextPolicy) -> list[Row]:
    """The in-context messages, in order (CONTEXT_COLUMNS), with the prompt tokens each costs, their
    full text, and what the policy's next call does with each ("sent", or "dropped" when it will
    be trimmed); then the reply priming."""
    leaving = set(policy.plan(conversation, extra_tokens=_next_message_tokens(conversation)).remove)
    rows: list[Row] = [
        {
            "role": m.role,
            "tokens": m.tokens,
            "next call": "dropped" if m.id in leaving else ("sent, pinned" if m.pinned else "sent"),
            "text": m.content,
        }
        for m in conversation.context_messages()
    ]
    rows.append({"role": "(reply priming)", "tokens": REPLY_PRIMING, "next call": "sent", "text": ""})
    return rows


@dataclass(frozen=True)
class ContextGauge:
    """How full the budget is now, split by what fills it."""

    budget: int
    system: int  # the system prompt, with its framing
    pinned: int  # earlier messages that are pinned
    history: int  # the other earlier exchanges still in context
    newest: int  # the pending user message, or the last exchange when none is pending
    priming: int = REPLY_PRIMING
    summary: int = 0  # the running summary's message (policy "summarize"), sent after the system prompt
    #: The budget as set, when calls are fitted to a lower one (`budget`: a server's context
    #: window, an estimate's safety margin); None when they are the same.
    budget_setting: int | None = None

    @property
    def used(self) -> int:
        return self.system + self.summary + self.pinned + self.history + self.newest + self.priming

    @property
    def free(self) -> int:
        return max(self.budget - self.used, 0)

    @property
    def fraction(self) -> float:
        return self.used / self.budget if self.budget else 1.0

    def parts(self) -> list[tuple[str, int]]:
        """(part, tokens), left to right as the gauge draws them."""
        return [
            ("system", self.system),
            ("summary", self.summary),
            ("pinned", self.pinned),
            ("history", self.history),
            ("newest", self.newest),
            ("priming", self.priming),
            ("free", self.free),
        ]


def context_gauge(conversation: Conversation) -> ContextGauge:
    context = conversation.context_messages()
    system = context[0].tokens
    rest = context[1:]
    newest_count = 1 if conversation.pending_user_message else 2
    newest = sum(m.tokens for m in rest[-newest_count:])
    earlier = rest[:-newest_count] if len(rest) > newest_count else []
    pinned = sum(m.tokens for m in earlier if m.pinned)
    history = sum(m.tokens for m in earlier) - pinned
    budget, setting = conversation.context_budget, conversation.settings.context_budget
    return ContextGauge(
        budget=budget,
        budget_setting=setting if setting != budget else None,
        system=system,
        pinned=pinned,
        history=history,
        newest=newest,
        priming=conversation.tokenizer.reply_priming,
        summary=conversation.summary_tokens,
    )


def _next_message_tokens(conversation: Conversation) -> int:
    """Tokens of the message the next call adds: none when one is pending, else a typical question."""
    if conversation.pending_user_message:
        return 0
    sizes = [m.tokens for m in conversation.messages if m.role == "user" and not m.automatic]
    return round(sum(sizes) / len(sizes)) if sizes else 20


def next_turn_drops(conversation: Conversation, policy: ContextPolicy) -> list[str]:
    """Ids of the messages the next call would take out, for a user message of typical size."""
    return list(policy.plan(conversation, extra_tokens=_next_message_tokens(conversation)).remove)


@dataclass(frozen=True)
class Totals:
    prompt_tokens: int
    completion_tokens: int
    #: US dollars; None when the model is not in the price table.
    cost: float | None
    #: True when any prompt figure is the local count because the server reported none.
    includes_counted: bool
    #: Prompt tokens the servers said they read from their prompt cache, and wrote to it.
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: US dollars the same tokens would have cost with no cache at all, less `cost` (negative
    #: when cache writes cost more than the reads saved); None when `cost` is.
    cache_saved: float | None = None
    #: True when any turn's server said how many prompt tokens came from its cache.
    cache_reported: bool = False

    @property
    def cache_hit_rate(self) -> float:
        """The share of prompt tokens served from cache (0 with no prompt tokens)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def totals(conversation: Conversation, table: ModelTable) -> Totals:
    """Tokens in and out over the whole conversation, each turn priced at its own model, with
    the tokens its server read from (or wrote to) a prompt cache at their own prices."""
    prompt = completion = cached = written = 0
    cost: float | None = 0.0
    uncached_cost: float | None = 0.0
    for turn in conversation.turns:
        prompt += turn.prompt_tokens
        completion += turn.reply_tokens
        cached += turn.cached_tokens
        written += turn.cache_write_tokens
        info = table.lookup(turn.model)
        if info is None or cost is None or uncached_cost is None:
            cost = uncached_cost = None
            continue
        cost += info.cost(
            turn.prompt_tokens,
            turn.reply_tokens,
            cached_tokens=turn.cached_tokens,
            cache_write_tokens=turn.cache_write_tokens,
        )
        uncached_cost += info.cost(turn.prompt_tokens, turn.reply_tokens)
    includes_counted = any(turn.reported_prompt_tokens is None for turn in conversation.turns)
    return Totals(
        prompt,
        completion,
        cost,
        includes_counted,
        cached_tokens=cached,
        cache_write_tokens=written,
        cache_saved=None if cost is None or uncached_cost is None else uncached_cost - cost,
        cache_reported=any(turn.reported_cached_tokens is not None for turn in conversation.turns),
    )


@dataclass(frozen=True, eq=False)
class DashboardFigures:
    """Everything the dashboard shows of one version of a conversation, as plain rows. Read it; do
    not change it (the same object serves every rerun until the conversation changes)."""

    gauge: ContextGauge
    totals: Totals
    #: `turn_rows`, `trim_rows` and `context_rows`.
    turns: list[Row]
    trims: list[Row]
    context: list[Row]
    #: The turns whose counted and reported prompt tokens differ.
    mismatched: list[Row]
    #: True when any turn has the server's own prompt-token figure.
    any_reported: bool
    in_context: int
    #: Ids of the messages the next turn would take out (`next_turn_drops`).
    next_drops: tuple[str, ...]
    #: A preview of the oldest of them; None when the next turn fits.
    next_drop_preview: str | None
    #: About how many prompt tokens the next call sends: what stays in context after the policy's
    #: drops, and a typical question when none is pending (never more than the budget unless the
    #: message alone does not fit).
    next_call_tokens: int = 0
    #: The last turn's prompt as the server cut it without saying so (None: read whole).
    server_cut: SilentTruncation | None = None
    #: Per trim (in `trims` order), the (role, whole text) of each message it dropped.
    trim_dropped: tuple[tuple[tuple[str, str], ...], ...] = ()


def record_version(conversation: Conversation, policy: ContextPolicy) -> tuple[object, ...]:
    """Changes whenever anything the dashboard shows of `conversation` can change, costing no walk
    of the history: messages and the turn, trim and summary records only grow, every change of a
    message's state (trimmed, summarized, unanswered, replaced) or pin moves the in-context or
    pinned token sums, which are kept as running sums, and settings are replaced, never changed."""
    return (
        len(conversation.messages),
        len(conversation.turns),
        len(conversation.trim_events),
        len(conversation.summary_versions),
        len(conversation.summary_events),
        conversation.prompt_tokens,
        conversation.pinned_tokens,
        conversation.settings,
        # The budget calls are fitted to: the setting, less what the tokenizer asks (core.counting.methods).
        conversation.context_budget,
        policy.name,
    )


_figures: weakref.WeakKeyDictionary[Conversation, tuple[tuple[object, ...], DashboardFigures]] = (
    weakref.WeakKeyDictionary()
)


def dashboard_figures(
    conversation: Conversation, policy: ContextPolicy, table: ModelTable
) -> DashboardFigures:
    """The dashboard's figures for `conversation` as it stands, computed once per version
    (`record_version`); one entry per live conversation, dropped with it."""
    version = (record_version(conversation, policy), table)
    cached = _figures.get(conversation)
    if cached is not None and cached[0] == version:
        return cached[1]
    turns = turn_rows(conversation)
    drops = tuple(next_turn_drops(conversation, policy))
    gauge = context_gauge(conversation)
    dropped = sum(conversation.message(message_id).tokens for message_id in drops)
    figures = DashboardFigures(
        gauge=gauge,
        totals=totals(conversation, table),
        turns=turns,
        trims=trim_rows(conversation),
        context=context_rows(conversation, policy),
        mismatched=[row for row in turns if row["difference"]],
        any_reported=any(row["reported_prompt_tokens"] is not None for row in turns),
        in_context=len(conversation.context_messages()),
        next_drops=drops,
        next_drop_preview=conversation.message(drops[0]).preview(40) if drops else None,
        next_call_tokens=gauge.used - dropped + _next_message_tokens(conversation),
        server_cut=conversation.turns[-1].server_cut if conversation.turns else None,
        trim_dropped=tuple(
            tuple((message.role, message.content) for message in map(conversation.message, event.dropped))
            for event in conversation.trim_events
        ),
    )
    _figures[conversation] = (version, figures)
    return figures
