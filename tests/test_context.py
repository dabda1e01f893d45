"""Context policies: what they plan is what they do; pins hold; the protocol is what the page asks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.chat.context import (
    FIRST_TURN_ALONE,
    NO_SUMMARIZER,
    POLICIES,
    Completion,
    DropOldest,
    StablePrefix,
    Summarize,
    exchanges,
    low_water_tokens,
    policy_named,
    summary_cap,
)
from core.chat.conversation import Conversation, MessageState
from core.chat.settings import ChatSettings
from core.chat.summaries import (
    CONDENSE_INSTRUCTION,
    SUMMARIZE_INSTRUCTION,
    SUMMARY_ACK,
    SUMMARY_FRAME,
    is_summary_message,
    offline_summary,
)
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.errors import (
    ConversationImportError,
    ConversationStateError,
    PromptTooLong,
    RateLimited,
    ServerError,
)
from core.providers.backends import Usage

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
@given(
    count=st.integers(0, 12),
    budget=st.integers(40, 600),
    pins=st.sets(st.integers(0, 11), max_size=3),
    policy=st.sampled_from([DropOldest(), StablePrefix()]),
    low_water=st.sampled_from([None, 0.1, 0.5, 0.95]),
)
def test_the_plan_is_exactly_what_fit_does(count, budget, pins, policy, low_water):
    conversation = conversation_with(count, budget)
    conversation.update_settings(low_water=low_water)
    for index in pins:
        if index < count:
            conversation.pin(conversation.messages[1 + 2 * index].id)
    conversation.add_user("the new question " + "word " * 5)
    plan = policy.plan(conversation)
    before = conversation.prompt_tokens
    try:
        sent = policy.fit(conversation)
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
    if isinstance(policy, StablePrefix):
        # Nothing is dropped while the prompt fits; a drop goes down to the low-water mark, or
        # as far as the pins allow.
        assert not dropped if before <= budget else dropped or before <= budget
        left = [u for u, r in exchanges(conversation) if not (u.pinned or r.pinned)]
        assert not dropped or plan.prompt_tokens <= low_water_tokens(conversation) or not left


def test_stable_prefix_drops_down_to_the_low_water_mark_then_only_appends():
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=600))
    policy = StablePrefix()
    prompts: list[list[dict[str, str]]] = []
    for i in range(30):
        conversation.add_user(f"question {i} " + "word " * 10)
        prompts.append(policy.fit(conversation))
        conversation.add_assistant(f"answer {i} " + "word " * 10)
    steps = [event.turn for event in conversation.trim_events]
    assert len(steps) >= 3
    for event in conversation.trim_events:
        assert event.tokens_after <= low_water_tokens(conversation) == 390 < event.tokens_before
        assert len(event.dropped) >= 4  # several exchanges at once, not one per turn
    for turn in range(1, len(prompts)):
        previous, sent = prompts[turn - 1], prompts[turn]
        if turn + 1 not in steps:  # between steps every prompt extends the one before
            assert sent[: len(previous)] == previous
    assert len(steps) <= 6  # drop_oldest drops on every turn past the limit (about 20 of them)


def test_stable_prefix_is_a_persona_and_sidebar_choice(tmp_path):
    conversation = conversation_with(3, 1000)
    conversation.update_settings(context_policy="stable_prefix", low_water=0.5)
    assert policy_named(conversation.settings.context_policy).name == "stable_prefix"
    assert low_water_tokens(conversation) == 500
    with pytest.raises(ValueError):
        conversation.update_settings(low_water=1.5)


def test_summarize_with_a_low_water_mark_folds_down_to_it():
    conversation = summarize_conversation(0, 800)
    conversation.update_settings(low_water=0.5)
    sent_before = None
    rewrites = 0
    for i in range(24):
        sent = turn(conversation, f"question {i} " + "word " * 12, f"answer {i} " + "word " * 12)
        if sent_before is not None and sent[: len(sent_before)] != sent_before:
            rewrites += 1
        sent_before = sent
        assert count_prompt_tokens(sent, "gpt-4o") <= 800
    events = conversation.summary_events
    assert events and rewrites == len(events)  # the prefix changed only where a summary was written
    for event in events:
        assert event.tokens_after <= 400  # the low-water mark, summary included


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


# --- Summarize: fold the oldest exchanges into a running summary ------------------------------

SUMMARIZE = Summarize()


def offline_complete(messages: list[dict[str, str]]) -> str:
    """The offline model's deterministic summary, as the session would get it."""
    summary = offline_summary(messages, tokenizer_for("gpt-4o"))
    assert summary is not None, "the policy asked for something other than a summary"
    return summary


def summarize_conversation(exchange_count: int, budget: int) -> Conversation:
    conversation = conversation_with(exchange_count, 100_000)
    conversation.update_settings(context_budget=budget, context_policy="summarize")
    return conversation


def turn(conversation: Conversation, question: str, answer: str, complete=offline_complete):
    conversation.add_user(question)
    sent = SUMMARIZE.fit(conversation, complete=complete)
    conversation.add_assistant(answer)
    return sent


def assert_alternates(sent: list[dict[str, str]]) -> None:
    roles = [m["role"] for m in sent]
    assert roles[0] == "system"
    # The running summary, when there is one, is a quoted record right after the system prompt,
    # answered by the assistant: the roles alternate over the whole request, as chat templates
    # such as Gemma's and Mistral's demand (they refuse two user messages in a row).
    if len(sent) > 1 and is_summary_message(sent[1]):
        assert sent[2] == {"role": "assistant", "content": SUMMARY_ACK}
    rest = roles[1:]
    assert rest == ["user", "assistant"] * (len(rest) // 2) + ["user"]


@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(150, 900),
    steps=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60), st.booleans()), min_size=1, max_size=14),
)
def test_summarize_invariants(budget, steps):
    """Whatever the turns: never over budget, alternation holds, pinned messages are never folded,
    the first exchange is never summarized alone, folded messages are never sent again, the plan
    is what fit does, and a model-written summary stays within a quarter of the budget."""
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=budget))
    conversation.update_settings(context_policy="summarize")
    for number, (question_words, answer_words, pin) in enumerate(steps):
        conversation.add_user(f"q{number} " + "word " * question_words)
        plan = SUMMARIZE.plan(conversation)
        events_before = len(conversation.summary_events)
        try:
            sent = SUMMARIZE.fit(conversation, complete=offline_complete)
        except PromptTooLong as error:
            assert not plan.fits and error.prompt_tokens == plan.prompt_tokens
            assert len(conversation.summary_events) == events_before  # nothing changed
            conversation.add_user(f"short {number}")  # the long one is left unanswered
            plan = SUMMARIZE.plan(conversation)
            try:
                sent = SUMMARIZE.fit(conversation, complete=offline_complete)
            except PromptTooLong:
                continue
        assert count_prompt_tokens(sent, "gpt-4o") == conversation.prompt_tokens <= budget
        assert conversation.prompt_tokens <= plan.prompt_tokens
        assert_alternates(sent)
        new_events = conversation.summary_events[events_before:]
        assert len(new_events) <= 1
        if new_events and not new_events[0].fallback:
            assert new_events[0].folded == list(plan.summarize)
            assert conversation.summary_tokens <= max(summary_cap(budget), plan.summary_tokens)
        elif new_events:
            assert new_events[0].dropped == list(plan.remove) == conversation.trim_events[-1].dropped
        sent_contents = {m["content"] for m in sent}
        for message in conversation.messages:
            if message.state is MessageState.SUMMARIZED:
                assert not message.pinned and message.content not in sent_contents
        conversation.add_assistant(f"a{number} " + "word " * answer_words)
        if pin:
            conversation.pin(conversation.messages[-1].id)
    folds = [event for event in conversation.summary_events if not event.fallback]
    if folds:
        assert len(folds[0].folded) >= 4, "the first exchange was summarized alone"
    for event in folds:
        assert event.summary_tokens <= summary_cap(event.budget)


def test_summarize_folds_the_oldest_exchanges_and_sends_the_summary_after_the_system_prompt():
    conversation = summarize_conversation(8, 220)
    oldest = [conversation.messages[i].id for i in range(1, 5)]
    conversation.add_user("the new question")
    plan = SUMMARIZE.plan(conversation)
    assert plan.summarize[:4] == tuple(oldest) and not plan.remove
    assert plan.leaving == plan.summarize and plan.writes_summary
    sent = SUMMARIZE.fit(conversation, complete=offline_complete)
    assert sent[1]["role"] == "user" and sent[1]["content"].startswith(SUMMARY_FRAME)
    newest_folded = conversation.message(plan.summarize[-1]).content
    assert newest_folded[:8] in sent[1]["content"]  # the offline model's line for it
    assert all(conversation.message(i).state is MessageState.SUMMARIZED for i in plan.summarize)
    assert MessageState.SUMMARIZED.label == "summarized · folded into the summary"
    event = conversation.summary_events[-1]
    assert event.turn == 9 and event.folded == list(plan.summarize) and not event.fallback
    assert event.tokens_before > event.tokens_after == conversation.prompt_tokens <= 220
    assert event.summary_tokens == conversation.summary_tokens == count_prompt_tokens(sent[1:3], "gpt-4o") - 3
    assert event.summarizer_model == "gpt-4o" and event.calls == 1
    summary = conversation.summary
    assert summary is not None and summary.through_id == plan.summarize[-1]
    assert [v.source for v in summary.versions] == ["model"]
    assert not conversation.trim_events  # nothing was dropped
    # The turn records the summary's share of the prompt.
    turn_record = conversation.add_assistant("answer")
    assert turn_record.summary_tokens == summary.tokens
    assert turn_record.messages_sent == len(sent)


def test_the_summary_is_never_written_for_the_first_exchange_alone():
    conversation = summarize_conversation(1, 100_000)
    conversation.update_settings(context_budget=conversation.prompt_tokens + 40)
    conversation.add_user("a long new question " + "word " * 60)
    plan = SUMMARIZE.plan(conversation)
    assert plan.fallback == FIRST_TURN_ALONE and not plan.summarize
    calls = []
    SUMMARIZE.fit(conversation, complete=lambda m: calls.append(m) or "never")
    assert calls == []
    event = conversation.summary_events[-1]
    assert event.fallback and event.fallback_reason == FIRST_TURN_ALONE
    assert event.dropped == conversation.trim_events[-1].dropped == list(plan.remove)
    assert conversation.summary is None


def test_pinned_exchanges_are_never_folded():
    conversation = summarize_conversation(6, 100_000)
    pinned = conversation.messages[1]
    conversation.pin(pinned.id)
    conversation.update_settings(context_budget=160)
    conversation.add_user("new")
    sent = SUMMARIZE.fit(conversation, complete=offline_complete)
    assert pinned.state is MessageState.CONTEXT and pinned.content in {m["content"] for m in sent}
    assert pinned.id not in conversation.summary_events[-1].folded


@pytest.mark.parametrize(
    "error", [ServerError("boom", status_code=500), RateLimited("slow down", status_code=429)]
)
def test_a_failed_summarizer_falls_back_to_dropping_and_says_so(error):
    conversation = summarize_conversation(8, 220)
    conversation.add_user("the new question")
    plan = SUMMARIZE.plan(conversation)

    def failing(messages):
        raise error

    sent = SUMMARIZE.fit(conversation, complete=failing)
    assert count_prompt_tokens(sent, "gpt-4o") <= 220
    event = conversation.summary_events[-1]
    assert event.fallback and str(error) in event.fallback_reason and event.calls == 1
    assert event.dropped == conversation.trim_events[-1].dropped
    assert not event.folded and conversation.summary is None
    assert all(conversation.message(i).state is MessageState.TRIMMED for i in event.dropped)
    assert set(event.dropped) <= set(plan.summarize)


def test_without_a_summarizer_it_drops_and_says_so():
    conversation = summarize_conversation(8, 220)
    conversation.add_user("the new question")
    SUMMARIZE.fit(conversation)  # no complete
    event = conversation.summary_events[-1]
    assert event.fallback and event.fallback_reason == NO_SUMMARIZER and event.calls == 0


def test_an_empty_summary_is_a_failure():
    conversation = summarize_conversation(8, 220)
    conversation.add_user("the new question")
    SUMMARIZE.fit(conversation, complete=lambda m: "   ")
    assert conversation.summary_events[-1].fallback and conversation.summary is None


def test_a_summary_past_a_quarter_of_the_budget_is_summarized_again():
    conversation = summarize_conversation(16, 400)
    conversation.add_user("the new question")
    requests: list[list[dict[str, str]]] = []

    def verbose_then_short(messages):
        requests.append(messages)
        if len(requests) == 1:
            return Completion(
                "blah " * 500, model="cheap-model", usage=Usage(prompt_tokens=300, completion_tokens=500)
            )
        return Completion("short summary", usage=Usage(prompt_tokens=520, completion_tokens=3))

    SUMMARIZE.fit(conversation, complete=verbose_then_short)
    assert requests[0][0]["content"] == SUMMARIZE_INSTRUCTION
    assert requests[1][0]["content"] == CONDENSE_INSTRUCTION
    event = conversation.summary_events[-1]
    assert event.resummarized and not event.truncated and event.calls == 2
    assert (event.summarizer_prompt_tokens, event.summarizer_completion_tokens) == (820, 503)
    assert event.summarizer_model == "cheap-model"
    assert conversation.summary.text == "short summary"
    assert conversation.summary_tokens <= summary_cap(400)


def test_a_summary_still_too_long_is_cut_to_its_share():
    conversation = summarize_conversation(16, 400)
    conversation.add_user("the new question")
    sent = SUMMARIZE.fit(conversation, complete=lambda m: "很长的总结。" * 300)
    event = conversation.summary_events[-1]
    assert event.resummarized and event.truncated
    assert conversation.summary_tokens <= summary_cap(400)
    assert count_prompt_tokens(sent, "gpt-4o") <= 400
    assert conversation.summary.text.endswith("…") and "\ufffd" not in conversation.summary.text


def test_a_lowered_budget_condenses_a_summary_past_its_share():
    conversation = summarize_conversation(8, 300)
    turn(conversation, "q", "a")
    before = conversation.summary
    assert before is not None
    conversation.update_settings(context_budget=conversation.prompt_tokens - 5)
    conversation.add_user("next")
    plan = SUMMARIZE.plan(conversation)
    assert plan.writes_summary
    SUMMARIZE.fit(conversation, complete=offline_complete)
    assert conversation.prompt_tokens <= conversation.context_budget
    assert conversation.summary_tokens <= summary_cap(conversation.context_budget)


def test_later_folds_merge_into_the_running_summary():
    conversation = summarize_conversation(0, 260)
    for i in range(14):
        turn(conversation, f"question {i} " + "word " * 10, f"answer {i} " + "word " * 10)
    folds = [e for e in conversation.summary_events if not e.fallback]
    assert len(folds) >= 2
    summary = conversation.summary
    assert summary is not None and len(summary.versions) == len(folds)
    assert summary.through_id == folds[-1].folded[-1]
    summarized = [m for m in conversation.messages if m.state is MessageState.SUMMARIZED]
    assert [m.id for m in summarized] == [i for e in folds for i in e.folded]


def test_the_summary_can_be_edited_and_its_history_is_kept():
    conversation = summarize_conversation(8, 220)
    turn(conversation, "q", "a")
    model_text = conversation.summary.text
    tokens_before = conversation.prompt_tokens
    edited = conversation.edit_summary("The user is vegetarian and lives in Chengdu.")
    assert edited.text == "The user is vegetarian and lives in Chengdu."
    assert [(v.source, v.text) for v in edited.versions] == [
        ("model", model_text),
        ("user", "The user is vegetarian and lives in Chengdu."),
    ]
    assert edited.through_id == edited.versions[0].through_id
    assert edited.tokens == conversation.count_summary(edited.text)
    assert (
        conversation.prompt_tokens == tokens_before - conversation.count_summary(model_text) + edited.tokens
    )
    assert conversation.api_messages()[1]["content"].endswith("lives in Chengdu.")
    assert conversation.edit_summary(edited.text).versions == edited.versions  # unchanged: no version
    with pytest.raises(ConversationStateError):
        conversation.edit_summary("  ")
    with pytest.raises(ConversationStateError):
        conversation_with(1, 1000).edit_summary("no summary yet")


def test_a_new_tokenizer_recounts_the_summary():
    conversation = summarize_conversation(8, 220)
    turn(conversation, "q", "a")
    conversation.update_settings(model="some-open-model", context_budget=100_000)
    assert conversation.summary_tokens == conversation.count_summary(conversation.summary.text)
    assert conversation.prompt_tokens == count_prompt_tokens(conversation.api_messages(), "some-open-model")


def test_the_summary_travels_with_the_export():
    conversation = summarize_conversation(8, 220)
    turn(
        conversation,
        "q",
        "a",
        complete=lambda m: Completion(
            "s1", usage=Usage(prompt_tokens=9, completion_tokens=2), usage_source="server"
        ),
    )
    conversation.edit_summary("s2 by the user")
    data = json.loads(conversation.to_json())
    assert data["version"] == 2 and [v["source"] for v in data["summary_versions"]] == ["model", "user"]
    restored = Conversation.from_dict(data)
    assert restored.to_dict() == conversation.to_dict()
    assert restored.prompt_tokens == conversation.prompt_tokens
    assert restored.api_messages() == conversation.api_messages()
    assert restored.summary == conversation.summary
    # A version 2 file from before summaries still imports.
    for key in ("summary_versions", "summary_events"):
        del data[key]
    old = Conversation.from_dict(data)
    assert old.summary is None and old.summary_events == []
    # A summary event naming a message that does not exist is refused.
    data = conversation.to_dict()
    data["summary_events"][0]["folded"].append("nope")
    with pytest.raises(ConversationImportError, match="Summary event"):
        Conversation.from_dict(data)


def test_the_markdown_export_shows_the_summary_where_the_cut_is():
    conversation = summarize_conversation(8, 220)
    turn(conversation, "q", "a")
    text = conversation.to_markdown()
    assert f"_({MessageState.SUMMARIZED.label})_" in text
    last_folded = conversation.message(conversation.summary.through_id).content
    assert text.index(last_folded) < text.index("## summary") < text.index("## user\n\nq\n")


def test_drop_oldest_keeps_sending_a_summary_written_earlier():
    conversation = summarize_conversation(8, 220)
    turn(conversation, "q", "a")
    conversation.update_settings(context_policy="drop_oldest")
    conversation.add_user("next " * 30)
    sent = POLICY.fit(conversation)
    assert sent[1]["content"].startswith(SUMMARY_FRAME)
    assert count_prompt_tokens(sent, "gpt-4o") == conversation.prompt_tokens <= 220
