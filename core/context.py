"""Context policies: how a conversation is fitted to its budget before each call.

A policy answers two questions. `plan()` says, without changing anything, what the next call
would take out of the context (the gauge, the next-turn prediction and the "exactly what the
next call sends" table all ask it, so they show the policy's real decision). `fit()` carries the
plan out just before a call and returns the messages to send; it may call a model (a policy
that summarizes) through the `complete` function it is given.

Every policy keeps the system prompt, the pending user message and pinned messages, and takes
out whole user/assistant pairs, so what is sent always reads system, user, assistant, ..., user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

from core.conversation import Conversation, Message
from core.errors import ConversationStateError, PromptTooLong
from core.settings import PolicyName

#: A model call a policy may make: messages in, reply text out.
Complete = Callable[[list[dict[str, str]]], str]


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

    @property
    def fits(self) -> bool:
        return self.prompt_tokens <= self.budget


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

    def plan(self, conversation: Conversation, *, extra_tokens: int = 0) -> ContextPlan:
        total = conversation.prompt_tokens + extra_tokens
        budget = conversation.context_budget
        remove: list[str] = []
        if total > budget:
            for user, reply in exchanges(conversation):
                if user.pinned or reply.pinned:
                    continue
                remove += [user.id, reply.id]
                total -= user.tokens + reply.tokens
                if total <= budget:
                    break
        return ContextPlan(tuple(remove), total, budget, conversation.pinned_tokens)

    def fit(self, conversation: Conversation, *, complete: Complete | None = None) -> list[dict[str, str]]:
        newest = conversation.pending_user_message
        if newest is None:
            raise ConversationStateError("There is no user message awaiting an answer.")
        plan = self.plan(conversation)
        if not plan.fits:
            raise PromptTooLong(
                text=newest.content,
                prompt_tokens=plan.prompt_tokens,
                budget=plan.budget,
                pinned_tokens=plan.pinned_tokens,
            )
        if plan.remove:
            conversation.record_trim(list(plan.remove), tokens_before=conversation.prompt_tokens)
        return conversation.api_messages()


POLICIES: dict[PolicyName, ContextPolicy] = {DropOldest.name: DropOldest()}


def policy_named(name: PolicyName) -> ContextPolicy:
    return POLICIES[name]
