"""Context policies: what they plan is what they do; pins hold; the protocol is what the page asks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.context import POLICIES, DropOldest, exchanges, policy_named
from core.conversation import Conversation, MessageState
from core.errors import PromptTooLong
from core.settings import ChatSettings
from core.tokens import count_prompt_tokens

POLICY = DropOldest()


def conversation_with(exchange_count: int, budget: int) -> Conversation:
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=100_000))
    for i in range(exchange_count):
        conversation.add_user(f"question {i} " + "word " * 10)
        conversation.add_assistant(f"answer {i} " + "word " * 10)
    conversation.update_settings(context_budget=budget)
    return conversation


def test_every_policy_is_registered_under_its_name():
    for name, policy in POLICIES.items():
        assert policy.name == name and policy_named(name) is policy


@settings(max_examples=100, deadline=None)
@given(count=st.integers(0, 12), budget=st.integers(40, 600), pins=st.sets(st.integers(0, 11), max_size=3))
def test_the_plan_is_exactly_what_fit_does(count, budget, pins):
    conversation = conversation_with(count, budget)
    for index in pins:
        if index < count:
            conversation.pin(conversation.messages[1 + 2 * index].id)
    conversation.add_user("the new question " + "word " * 5)
    plan = POLICY.plan(conversation)
    try:
        sent = POLICY.fit(conversation)
    except PromptTooLong as error:
        assert not plan.fits and error.prompt_tokens == plan.prompt_tokens
        assert error.pinned_tokens == plan.pinned_tokens
        assert not conversation.trim_events  # nothing changed
        return
    assert plan.fits
    assert count_prompt_tokens(sent, "gpt-4o") == plan.prompt_tokens <= budget
    dropped = list(conversation.trim_events[-1].dropped) if conversation.trim_events else []
    assert dropped == list(plan.remove)
    assert all(conversation.message(i).state is MessageState.TRIMMED for i in dropped)
    assert not any(conversation.message(i).pinned for i in dropped)
    pinned_contents = {m.content for m in conversation.messages if m.pinned}
    assert pinned_contents <= {m["content"] for m in sent}


def test_pins_that_cannot_fit_are_named_before_sending():
    conversation = conversation_with(4, 100_000)
    for user, _ in exchanges(conversation):
        conversation.pin(user.id)
    conversation.update_settings(context_budget=80)
    conversation.add_user("new")
    with pytest.raises(PromptTooLong, match="pinned messages") as caught:
        POLICY.fit(conversation)
    assert caught.value.pinned_tokens > 0


def test_exchanges_leave_out_the_pending_message():
    conversation = conversation_with(2, 1000)
    assert len(list(exchanges(conversation))) == 2
    conversation.add_user("pending")
    pairs = list(exchanges(conversation))
    assert len(pairs) == 2 and all(u.role == "user" and a.role == "assistant" for u, a in pairs)
