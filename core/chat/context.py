"""Context policies: how a conversation is fitted to its budget before each call.

A policy answers two questions. `plan()` says, without changing anything, what the next call
would take out of the context (the gauge, the next-turn prediction and the "exactly what the
next call sends" table all ask it, so they show the policy's real decision). `fit()` carries the
plan out just before a call and returns the messages to send; it may call a model (a policy
that summarizes) through the `complete` function it is given.

Every policy keeps the system prompt, the pending user message and pinned messages, and takes
out whole user/assistant pairs, so what is sent always reads system, user, assistant, ..., user
(with the running summary, when there is one, right after the system prompt as a quoted user
message and its one-word acknowledgement, so the roles alternate throughout).

Three policies: `DropOldest` drops the oldest exchanges; `StablePrefix` drops them too, but
down to a low-water mark, so the turns after a drop only append and a server's prompt cache keeps
serving the prefix; `Summarize` folds them into a running summary written by a model (see
`core.chat.summaries`), and drops them instead when it cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from core.chat.conversation import Conversation, Message
from core.chat.settings import DEFAULT_LOW_WATER, PolicyName
from core.chat.summaries import condense_request, summarize_request, truncate_to_tokens
from core.errors import ConversationStateError, DashboardError, EmptyReply, PromptTooLong
from core.providers.backends import Usage


@dataclass(frozen=True)
class Completion:
    """A model call's reply, with what is known about it."""

    text: str
    #: The model that answered (None: the conversation's summarizer model).
    model: str | None = None
    usage: Usage | None = None
    usage_source: Literal["server", "local"] | None = None


#: A model call a policy may make: messages in, reply text (or a `Completion`) out. It raises a
#: `DashboardError` when the call fails.
Complete = Callable[[list[dict[str, str]]], "str | Completion"]


@dataclass(frozen=True)
class ContextPlan:
    """What one call would take out of the context, and the prompt that would be left."""

    #: Ids of the in-context messages the call takes out, oldest first.
    remove: tuple[str, ...]
    #: Prompt tokens of what is left, reply priming included.
    prompt_tokens: int
    budget: int
    #: Tokens held by pinned messages (which no policy takes out).
    pinned_tokens: int
    #: Ids of the in-context messages the call folds into the running summary, oldest first.
    summarize: tuple[str, ...] = ()
    #: Prompt tokens of the summary message sent. When the call writes a new summary (`summarize`
    #: or `condense`), the most it may take; `prompt_tokens` is then the most the prompt may be.
    summary_tokens: int = 0
    #: The call shortens the summary, which has grown past its share of the budget.
    condense: bool = False
    #: Why the call drops (`remove`) what the policy would rather summarize; None when it does not.
    fallback: str | None = None

    def too_long(self, text: str) -> PromptTooLong:
        """The error for a plan that cannot fit: `text`, the pending message, is kept."""
        return PromptTooLong(
            text=text, prompt_tokens=self.prompt_tokens, budget=self.budget, pinned_tokens=self.pinned_tokens
        )

    @property
    def fits(self) -> bool:
        return self.prompt_tokens <= self.budget

    @property
    def leaving(self) -> tuple[str, ...]:
        """Every id the call takes out of the context, dropped or summarized (a call does one or
        the other), oldest first."""
        return self.remove + self.summarize

    @property
    def writes_summary(self) -> bool:
        """The call asks the summarizer model (when it can)."""
        return bool(self.summarize) or self.condense


class ContextPolicy(Protocol):
    name: ClassVar[PolicyName]

    def plan(self, conversation: Conversation, *, extra_tokens: int = 0) -> ContextPlan:
        """What the next call takes out. `extra_tokens` asks for a user message not added yet."""
        ...

    def fit(self, conversation: Conversation, *, complete: Complete | None = None) -> list[dict[str, str]]:
        """Fit the conversation to its budget now; the messages to send. Raises PromptTooLong,
        changing nothing, when even the policy's best cannot fit."""
        ...


def exchanges(conversation: Conversation) -> Iterator[tuple[Message, Message]]:
    """The in-context user/assistant pairs a policy may take out, oldest first, one at a time.

    A pending user message is not part of one; it is what the call is for.
    """
    context = conversation.iter_context()
    next(context)  # the system prompt never leaves
    pending = conversation.pending_user_message
    for user in context:
        if user is pending:
            return
        yield user, next(context)


class DropOldest:
    """Drop the oldest whole exchanges, skipping pinned ones, until the prompt fits the budget.

    It walks only as many exchanges as it drops (plus pinned ones it skips), so a turn that fits
    costs nothing however long the history.
    """

    name: ClassVar[PolicyName] = "drop_oldest"

    def target(self, conversation: Conversation) -> int:
        """The prompt tokens a call that must drop drops down to."""
        return conversation.context_budget

    def plan(self, conversation: Conversation, *, extra_tokens: int = 0) -> ContextPlan:
        total = conversation.prompt_tokens + extra_tokens
        budget = conversation.context_budget
        remove: list[str] = []
        if total > budget:
            target = self.target(conversation)
            for user, reply in exchanges(conversation):
                if user.pinned or reply.pinned:
                    continue
                remove += [user.id, reply.id]
                total -= user.tokens + reply.tokens
                if total <= target:
                    break
        pinned, summary = conversation.pinned_tokens, conversation.summary_tokens
        return ContextPlan(tuple(remove), total, budget, pinned, summary_tokens=summary)

    def fit(self, conversation: Conversation, *, complete: Complete | None = None) -> list[dict[str, str]]:
        newest = conversation.pending_user_message
        if newest is None:
            raise ConversationStateError("There is no user message awaiting an answer.")
        plan = self.plan(conversation)
        if not plan.fits:
            raise plan.too_long(newest.content)
        if plan.remove:
            conversation.record_trim(list(plan.remove), tokens_before=conversation.prompt_tokens)
        return conversation.api_messages()


def low_water_tokens(conversation: Conversation) -> int:
    """The prompt tokens a stable-prefix step cuts down to: the low-water share of the budget."""
    share = conversation.settings.low_water
    return int(conversation.context_budget * (DEFAULT_LOW_WATER if share is None else share))


class StablePrefix(DropOldest):
    """Drop the oldest exchanges as `DropOldest` does, but only when the prompt would not fit,
    and then down to the low-water mark (`ChatSettings.low_water`, 65% of the budget unless set).

    Prompt caches serve the longest prefix a prompt shares with a recent one. Dropping one
    exchange per turn at the limit changes the prompt's start on every turn, so almost nothing
    is served from cache; dropping several at once, now and then, leaves the turns between two
    steps appending to the same prefix. Pins hold as in `DropOldest`: when they leave no way down
    to the mark, it drops what it can, as long as the prompt fits the budget.
    """

    name: ClassVar[PolicyName] = "stable_prefix"

    def target(self, conversation: Conversation) -> int:
        return low_water_tokens(conversation)


#: The summary's share of the budget: past it, the summary is summarized again.
SUMMARY_SHARE = 4
#: A fold frees this share of the budget more than it must, so that the next one is a few turns
#: away rather than on every turn (each is a summarizer call).
FOLD_HEADROOM_SHARE = 8
#: The least room (tokens of summary text) worth asking a summarizer for.
MIN_SUMMARY_TEXT_TOKENS = 16
#: Asked for this many tokens fewer than the room, a summary that keeps to it fits the room.
SUMMARY_MARGIN_TOKENS = 2
#: Recorded when the policy drops the first exchange rather than summarize it alone.
FIRST_TURN_ALONE = (
    "Only the first exchange would have been folded, and a summary of one exchange alone is not "
    "written: it was dropped instead."
)
NO_ROOM = "There is no room in the budget for a summary: the oldest exchanges were dropped instead."
NO_SUMMARIZER = "No summarizer model was available: the oldest exchanges were dropped instead."


def summary_cap(budget: int) -> int:
    """The most prompt tokens the summary message may take: a quarter of the budget."""
    return budget // SUMMARY_SHARE


class Summarize:
    """Fold the oldest exchanges (skipping pinned ones) into a running summary written by a model.

    When the prompt would exceed the budget, it folds the oldest exchanges until what is left,
    with room for the summary at its cap (a quarter of the budget) and an eighth of the budget to
    spare, fits; so it does not need to summarize again for a few turns. The summarizer gets the
    previous summary and the folded exchanges and is asked for at most the room left. A summary
    over that is condensed by a second call, and cut to fit when still too long. A summary that
    has grown past its cap while the prompt does not fit (the budget was lowered) is condensed.

    It never summarizes the first exchange alone, and drops instead (recording why, in a
    `SummaryEvent` with `fallback` set) when there is no room for a summary, no `complete` to
    call, or the call fails.
    """

    name: ClassVar[PolicyName] = "summarize"

    def plan(self, conversation: Conversation, *, extra_tokens: int = 0) -> ContextPlan:
        budget = conversation.context_budget
        total = conversation.prompt_tokens + extra_tokens
        current = conversation.summary_tokens
        cap = summary_cap(budget)
        headroom = budget // FOLD_HEADROOM_SHARE
        pinned = conversation.pinned_tokens
        if total <= budget:
            return ContextPlan((), total, budget, pinned, summary_tokens=current)
        base = total - current  # the prompt without the summary
        least = conversation.count_summary("") + MIN_SUMMARY_TEXT_TOKENS
        # Folded down to the low-water mark when one is set, as a stable_prefix step drops.
        low_water = conversation.settings.low_water
        mark = budget - headroom if low_water is None else low_water_tokens(conversation)
        fold: list[str] = []
        folded_exchanges = 0
        for user, reply in exchanges(conversation):
            if base + cap <= mark and (folded_exchanges >= 2 or conversation.summary is not None):
                break
            if user.pinned or reply.pinned:
                continue
            fold += [user.id, reply.id]
            folded_exchanges += 1
            base -= user.tokens + reply.tokens
        if folded_exchanges == 1 and conversation.summary is None:
            return self._drop_instead(conversation, extra_tokens, FIRST_TURN_ALONE)
        # Not even everything foldable leaves room for the cap: the summary gets what room is left.
        limit = min(cap, budget - base)
        if limit < least:
            return self._drop_instead(conversation, extra_tokens, NO_ROOM)
        return ContextPlan(
            (), base + limit, budget, pinned, summarize=tuple(fold), summary_tokens=limit, condense=not fold
        )

    def fit(self, conversation: Conversation, *, complete: Complete | None = None) -> list[dict[str, str]]:
        newest = conversation.pending_user_message
        if newest is None:
            raise ConversationStateError("There is no user message awaiting an answer.")
        plan = self.plan(conversation)
        if plan.writes_summary and complete is None:
            plan = self._drop_instead(conversation, 0, NO_SUMMARIZER)
        if not plan.fits:
            raise plan.too_long(newest.content)
        tokens_before = conversation.prompt_tokens
        model = conversation.settings.effective_summarizer_model
        if plan.fallback is not None:
            conversation.record_summary_fallback(
                plan.fallback, dropped=list(plan.remove), tokens_before=tokens_before
            )
        elif plan.writes_summary:
            assert complete is not None
            writer = _SummaryWriter(conversation, complete)
            try:
                text = writer.write(plan)
            except DashboardError as error:
                reason = f"The summarizer failed, so the oldest exchanges were dropped instead: {error}"
                drop = self._drop_instead(conversation, 0, reason)
                if not drop.fits:
                    raise drop.too_long(newest.content) from error
                conversation.record_summary_fallback(
                    reason,
                    dropped=list(drop.remove),
                    tokens_before=tokens_before,
                    summarizer_model=writer.model or model,
                    calls=writer.calls,
                )
            else:
                conversation.record_summary(
                    list(plan.summarize),
                    text,
                    tokens_before=tokens_before,
                    summarizer_model=writer.model or model,
                    calls=writer.calls,
                    usage=writer.usage,
                    usage_source=writer.usage_source,
                    resummarized=writer.resummarized,
                    truncated=writer.truncated,
                )
        return conversation.api_messages()

    @staticmethod
    def _drop_instead(conversation: Conversation, extra_tokens: int, reason: str) -> ContextPlan:
        """DropOldest's plan, marked as this policy's fallback when it drops anything."""
        drop = DropOldest().plan(conversation, extra_tokens=extra_tokens)
        if not drop.remove:
            return drop
        return ContextPlan(
            drop.remove,
            drop.prompt_tokens,
            drop.budget,
            drop.pinned_tokens,
            summary_tokens=drop.summary_tokens,
            fallback=reason,
        )


class _SummaryWriter:
    """Asks the summarizer for one summary within a plan's limit: a fold, a second call to
    condense it when it came out too long, and a cut when it is still too long."""

    def __init__(self, conversation: Conversation, complete: Complete) -> None:
        self.conversation = conversation
        self.complete = complete
        self.calls = 0
        self.model: str | None = None
        self.usage: Usage | None = None
        self.usage_source: Literal["server", "local"] | None = None
        self.resummarized = False
        self.truncated = False

    def write(self, plan: ContextPlan) -> str:
        conversation = self.conversation
        limit = plan.summary_tokens
        # A few tokens of margin: the framing and the text do not always tokenize apart as together.
        text_limit = limit - conversation.count_summary("") - SUMMARY_MARGIN_TOKENS
        previous = conversation.summary.text if conversation.summary is not None else ""
        text = previous
        if plan.summarize:
            folded = [conversation.message(i) for i in plan.summarize]
            request = summarize_request(previous or None, [(m.role, m.content) for m in folded], text_limit)
            text = self._call(request)
        if conversation.count_summary(text) > limit:
            self.resummarized = True
            text = self._call(condense_request(text, text_limit))
        while conversation.count_summary(text) > limit and text_limit > 0:
            self.truncated = True
            text = truncate_to_tokens(text, conversation.tokenizer, text_limit)
            text_limit -= 1
        if conversation.count_summary(text) > limit:  # not reached: the plan leaves room for "…"
            raise DashboardError(f"The summary could not be cut to its {limit} tokens.").coded(
                "summary_too_long", limit=limit
            )
        return text

    def _call(self, messages: list[dict[str, str]]) -> str:
        self.calls += 1
        result = self.complete(messages)
        reply = result if isinstance(result, Completion) else Completion(result)
        if reply.model:
            self.model = reply.model
        if reply.usage is not None:
            self.usage = Usage(
                prompt_tokens=reply.usage.prompt_tokens + (self.usage.prompt_tokens if self.usage else 0),
                completion_tokens=reply.usage.completion_tokens
                + (self.usage.completion_tokens if self.usage else 0),
            )
            self.usage_source = reply.usage_source or self.usage_source
        text = reply.text.strip()
        if not text:
            raise EmptyReply("The summarizer sent an empty summary.").coded("summary_empty")
        return text


POLICIES: dict[PolicyName, ContextPolicy] = {
    DropOldest.name: DropOldest(),
    Summarize.name: Summarize(),
    StablePrefix.name: StablePrefix(),
}


def policy_named(name: PolicyName) -> ContextPolicy:
    return POLICIES[name]
