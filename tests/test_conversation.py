"""The Conversation contract: budget trimming, turn records, failures that lose nothing, export."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.backends import Usage
from core.context import DropOldest
from core.conversation import Conversation, MessageState
from core.errors import ConversationImportError, ConversationStateError, PromptTooLong
from core.settings import ChatSettings
from core.tokens import count_prompt_tokens

SYSTEM = "You are a terse assistant."
POLICY = DropOldest()


def new_conversation(model: str = "gpt-4o", context_budget: int = 1000, **kwargs) -> Conversation:
    return Conversation(SYSTEM, ChatSettings(model=model, context_budget=context_budget), **kwargs)


def prepare(conversation: Conversation) -> list[dict[str, str]]:
    return POLICY.fit(conversation)


def chat(conversation: Conversation, question: str, answer: str) -> list[dict[str, str]]:
    conversation.add_user(question)
    sent = prepare(conversation)
    conversation.add_assistant(
        answer, Usage(prompt_tokens=count_prompt_tokens(sent, "gpt-4o"), completion_tokens=5)
    )
    return sent


def assert_well_formed(sent: list[dict[str, str]]) -> None:
    assert sent[0]["role"] == "system"
    roles = [m["role"] for m in sent[1:]]
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]


def test_prompt_fits_budget_by_dropping_oldest_whole_exchanges():
    conversation = new_conversation("gpt-4o", 120)
    for i in range(10):
        sent = chat(conversation, f"question {i} " + "word " * 10, f"answer {i} " + "word " * 10)
        assert count_prompt_tokens(sent, "gpt-4o") <= 120
        assert_well_formed(sent)
        assert sent[-1]["content"].startswith(f"question {i}")
    assert conversation.trim_events, "ten long exchanges cannot fit 120 tokens"
    first = conversation.trim_events[0]
    # The oldest question and its answer, together.
    assert first.dropped == [conversation.messages[1].id, conversation.messages[2].id]
    assert first.tokens_before > first.budget >= first.tokens_after
    assert first.tokens_freed == sum(conversation.message(i).tokens for i in first.dropped)


def test_trimmed_messages_stay_in_history_and_are_never_sent_again():
    conversation = new_conversation("gpt-4o", 100)
    sent_contents = []
    for i in range(8):
        sent_contents.append(
            [m["content"] for m in chat(conversation, f"q{i} " + "x " * 15, f"a{i} " + "y " * 15)]
        )
    assert len(conversation.messages) == 1 + 2 * 8
    assert conversation.trim_events
    for event in conversation.trim_events:
        for message_id in event.dropped:
            message = conversation.message(message_id)
            assert message.state == "trimmed"
            # Sent up to the turn before the trim, never from that turn on.
            assert message.content in sent_contents[event.turn - 2]
            assert all(message.content not in sent for sent in sent_contents[event.turn - 1 :])


def test_counted_prompt_tokens_match_what_is_sent():
    conversation = new_conversation("gpt-4o-mini", 10_000)
    for i in range(5):
        conversation.add_user(f"Tell me about dish number {i} 🍜 <|endoftext|>")
        sent = prepare(conversation)
        assert conversation.prompt_tokens == count_prompt_tokens(sent, "gpt-4o-mini")
        turn = conversation.add_assistant("It is tasty.", Usage(prompt_tokens=999, completion_tokens=4))
        assert turn.counted_prompt_tokens == count_prompt_tokens(sent, "gpt-4o-mini")
        assert (turn.reported_prompt_tokens, turn.reported_completion_tokens) == (999, 4)
        assert turn.messages_sent == len(sent)
        assert turn.number == i + 1


def test_too_long_message_raises_and_loses_nothing():
    conversation = new_conversation("gpt-4o", 60)
    chat(conversation, "hi", "hello")
    before = conversation.to_dict()
    long_text = "spaghetti " * 200
    conversation.add_user(long_text)
    with pytest.raises(PromptTooLong) as caught:
        prepare(conversation)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.text == long_text
    assert error.overflow == error.prompt_tokens - 60 > 0
    assert f"{error.overflow} more than the context budget of 60" in str(error)
    # Nothing was trimmed for a call that was never made; the text waits, pending.
    assert conversation.trim_events == []
    assert [m.state for m in conversation.messages[:3]] == [m["state"] for m in before["messages"]]
    assert conversation.pending_user_message.content == long_text
    # Raising the budget and retrying sends it; or a shorter message takes its place.
    conversation.add_user("short one")
    assert conversation.messages[-2].state == "unanswered"
    sent = prepare(conversation)
    assert_well_formed(sent)
    assert sent[-1]["content"] == "short one"


def test_failed_call_keeps_user_message_pending_for_retry():
    conversation = new_conversation("gpt-4o", 1000)
    conversation.add_user("first try")
    first = prepare(conversation)
    # The call failed: nothing is recorded, and a retry sends exactly the same messages.
    assert conversation.turns == []
    assert prepare(conversation) == first


def test_two_user_messages_are_never_sent_in_a_row():
    conversation = new_conversation("gpt-4o", 1000)
    conversation.add_user("lost to a server error")
    prepare(conversation)
    conversation.add_user("second attempt")
    sent = prepare(conversation)
    assert [m["content"] for m in sent] == [SYSTEM, "second attempt"]
    assert [m.state for m in conversation.messages] == ["context", "unanswered", "context"]


def test_interrupted_reply_is_kept_and_marked():
    conversation = new_conversation("gpt-4o", 1000)
    conversation.add_user("tell me a long story")
    prepare(conversation)
    turn = conversation.add_assistant("Once upon a", None, interrupted=True)
    assert turn.interrupted and turn.reported_prompt_tokens is None and turn.usage_source is None
    assert conversation.messages[-1].interrupted
    assert conversation.messages[-1].content == "Once upon a"


def test_empty_reply_is_not_recorded():
    conversation = new_conversation("gpt-4o", 1000)
    conversation.add_user("hello")
    prepare(conversation)
    with pytest.raises(ConversationStateError):
        conversation.add_assistant("")
    assert conversation.pending_user_message is not None
    assert conversation.turns == []


def test_state_errors():
    conversation = new_conversation("gpt-4o", 1000)
    with pytest.raises(ConversationStateError):
        prepare(conversation)
    with pytest.raises(ConversationStateError):
        conversation.add_assistant("unasked")
    with pytest.raises(ConversationStateError):
        conversation.regenerate()
    with pytest.raises(ConversationStateError):
        conversation.add_user("   ")


def test_regenerate_sets_the_old_answer_aside():
    conversation = new_conversation("gpt-4o", 1000)
    chat(conversation, "q", "first answer")
    conversation.regenerate()
    sent = prepare(conversation)
    assert [m["content"] for m in sent] == [SYSTEM, "q"]
    conversation.add_assistant("second answer")
    assert [m.state for m in conversation.messages] == ["context", "context", "replaced", "context"]
    assert len(conversation.turns) == 2


def test_changing_model_recounts_only_when_the_tokenizer_changes():
    conversation = new_conversation("gpt-4", 1000)
    chat(conversation, "多少钱？こんにちは", "很好吃")
    cl100k_total = conversation.prompt_tokens
    conversation.update_settings(model="gpt-4o")
    conversation.add_user("next")
    assert conversation.prompt_tokens == count_prompt_tokens(prepare(conversation), "gpt-4o")
    assert conversation.prompt_tokens != cl100k_total + conversation.messages[-1].tokens


def test_round_trip_keeps_everything():
    conversation = new_conversation("gpt-4o", 90, persona_id="foodie")
    for i in range(6):
        chat(conversation, f"question {i} about noodles", f"answer {i} " + "tasty " * 8)
    conversation.add_user("pending question")
    data = json.loads(conversation.to_json())
    restored = Conversation.from_dict(data)
    assert restored.to_dict() == conversation.to_dict()
    assert restored.prompt_tokens == conversation.prompt_tokens
    assert restored.trim_events and restored.pending_user_message.content == "pending question"
    # The restored conversation carries on.
    assert_well_formed(prepare(restored))


def test_import_recounts_tokens_instead_of_trusting_the_file():
    conversation = new_conversation("gpt-4o", 500)
    chat(conversation, "q", "a")
    data = conversation.to_dict()
    for message in data["messages"]:
        message["tokens"] = 1
    assert Conversation.from_dict(data).prompt_tokens == conversation.prompt_tokens


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"{not json", "not valid JSON (line 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "not a conversation export"),
        (json.dumps({"model": "gpt-4o", "context_budget": 10, "messages": []}).encode(), "messages"),
        (
            json.dumps(
                {"model": "gpt-4o", "context_budget": 10, "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            "messages[0].role",
        ),
        (
            json.dumps(
                {"model": "gpt-4o", "context_budget": 10, "messages": [{"role": "system", "content": 42}]}
            ).encode(),
            "messages[0].content",
        ),
        (
            json.dumps({"model": "gpt-4o", "context_budget": 10, "api_key": "sk-x", "messages": []}).encode(),
            "api_key",
        ),
        (
            json.dumps(
                {
                    "model": "gpt-4o",
                    "context_budget": 10,
                    "messages": [{"role": "user", "content": "no system prompt"}],
                }
            ).encode(),
            "first message must be the system prompt",
        ),
        (
            json.dumps(
                {
                    "model": "gpt-4o",
                    "context_budget": 10,
                    "messages": [
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": "a"},
                        {"role": "user", "content": "b"},
                    ],
                }
            ).encode(),
            "must alternate",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_bad_imports_are_rejected_clearly(payload, problem):
    with pytest.raises(ConversationImportError) as caught:
        Conversation.from_json(payload)
    assert problem in str(caught.value)


def test_oversized_import_is_rejected_before_parsing():
    with pytest.raises(ConversationImportError, match="bytes"):
        Conversation.from_json(b" " * 101, max_bytes=100)


# --- properties over random conversations ---------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("chat"), st.integers(1, 120), st.integers(1, 120)),
        st.tuples(st.just("fail"), st.integers(1, 120), st.just(0)),
        st.tuples(st.just("budget"), st.integers(40, 800), st.just(0)),
        st.tuples(st.just("regenerate"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(budget=st.integers(40, 800), ops=operations)
def test_trimming_invariants(budget, ops):
    conversation = new_conversation("gpt-4o", budget)
    ever_trimmed: set[int] = set()
    for op, a, b in ops:
        if op == "budget":
            conversation.update_settings(context_budget=a)
            continue
        if op == "regenerate":
            if conversation.pending_user_message is None and len(conversation.context_messages()) > 1:
                conversation.regenerate()
            else:
                continue
        else:
            conversation.add_user("word " * a)
        history_before = [(m.role, m.content) for m in conversation.messages]
        try:
            sent = prepare(conversation)
        except PromptTooLong as error:
            assert error.prompt_tokens > conversation.context_budget
            assert conversation.pending_user_message.content == error.text
            continue
        finally:
            # Messages are only ever appended: nothing in the history is lost or rewritten.
            assert [(m.role, m.content) for m in conversation.messages] == history_before
        assert_well_formed(sent)
        assert (
            count_prompt_tokens(sent, "gpt-4o") == conversation.prompt_tokens <= conversation.context_budget
        )
        sent_ids = {id(m) for m in conversation.context_messages()}
        assert not sent_ids & ever_trimmed
        ever_trimmed |= {id(m) for m in conversation.messages if m.state == "trimmed"}
        if op == "chat" or op == "regenerate":
            conversation.add_assistant("reply " * max(b, 1))
    restored = Conversation.from_dict(conversation.to_dict())
    assert restored.to_dict() == conversation.to_dict()


# --- fuzzing the import ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _valid_export() -> dict:
    conversation = new_conversation("gpt-4o", 80)
    for i in range(4):
        chat(conversation, f"question {i} " + "x " * 10, f"answer {i} " + "y " * 10)
    conversation.add_user("pending")
    return conversation.to_dict()


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


VALID_EXPORT = _valid_export()
EXPORT_PATHS = [p for p in _paths(VALID_EXPORT) if p]


def _accepts_or_rejects_cleanly(data) -> None:
    try:
        conversation = Conversation.from_dict(data)
    except ConversationImportError as error:
        assert str(error)
        return
    # Whatever is accepted is well-formed enough to carry on.
    if conversation.pending_user_message is None:
        conversation.add_user("carry on")
    try:
        sent = prepare(conversation)
    except PromptTooLong:
        return
    assert_well_formed(sent)


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_import_fuzz_random_json(data):
    _accepts_or_rejects_cleanly(data)


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(EXPORT_PATHS), replacement=json_values)
def test_import_fuzz_one_field_of_a_valid_export_replaced(path, replacement):
    data = json.loads(json.dumps(VALID_EXPORT))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    _accepts_or_rejects_cleanly(data)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_import_fuzz_random_bytes(raw):
    try:
        result = Conversation.from_json(raw)
    except ConversationImportError as error:
        assert str(error)
    else:
        assert isinstance(result, Conversation)


# --- identity, states, format versions ---------------------------------------------------------


def test_messages_have_stable_unique_ids_and_creation_times():
    conversation = new_conversation("gpt-4o", 1000)
    chat(conversation, "q", "a")
    ids = [m.id for m in conversation.messages]
    assert len(set(ids)) == 3 and all(ids)
    assert all(m.created_at.tzinfo is not None for m in conversation.messages)
    restored = Conversation.from_dict(json.loads(conversation.to_json()))
    assert [m.id for m in restored.messages] == ids
    assert restored.message(ids[1]).content == "q"
    with pytest.raises(ConversationStateError):
        conversation.message("no-such-id")


def test_each_state_has_one_label_used_by_the_export():
    assert {state.value for state in MessageState} == {"context", "trimmed", "unanswered", "replaced"}
    assert MessageState.TRIMMED.label == "trimmed · no longer in the model's context"
    conversation = new_conversation("gpt-4o", 1000)
    chat(conversation, "q", "first")
    conversation.regenerate()
    assert f"_({MessageState.REPLACED.label})_" in conversation.to_markdown()


def test_a_version_1_export_still_imports():
    v1 = {
        "format": "persona-dashboard/conversation",
        "version": 1,
        "persona_id": "foodie",
        "model": "gpt-4o",
        "context_budget": 300,
        "messages": [
            {"role": "system", "content": "sys", "state": "context", "tokens": 0},
            {"role": "user", "content": "old q", "state": "trimmed"},
            {"role": "assistant", "content": "old a", "state": "trimmed"},
            {"role": "user", "content": "new q"},
            {"role": "assistant", "content": "new a", "interrupted": True},
        ],
        "turns": [],
        "trim_events": [
            {"turn": 2, "dropped": [1, 2], "tokens_before": 400, "tokens_after": 200, "budget": 300}
        ],
    }
    conversation = Conversation.from_dict(v1)
    assert (conversation.model, conversation.context_budget, conversation.persona_id) == (
        "gpt-4o",
        300,
        "foodie",
    )
    dropped = conversation.trim_events[0].dropped
    assert [conversation.message(i).content for i in dropped] == ["old q", "old a"]
    assert conversation.messages[-1].interrupted
    assert conversation.to_dict()["version"] == 2
    v1["trim_events"][0]["dropped"] = [7]
    with pytest.raises(ConversationImportError, match="names a message that does not exist"):
        Conversation.from_dict(v1)


def test_duplicate_message_ids_are_rejected():
    data = _valid_export()
    data["messages"][2]["id"] = data["messages"][1]["id"]
    with pytest.raises(ConversationImportError, match="share one id"):
        Conversation.from_dict(data)


def test_settings_travel_with_the_conversation():
    conversation = Conversation(
        SYSTEM, ChatSettings(model="gpt-4.1", context_budget=5000, max_reply_tokens=99, sampling={"seed": 7})
    )
    restored = Conversation.from_dict(conversation.to_dict())
    assert restored.settings == conversation.settings
    with pytest.raises(ValueError):
        conversation.update_settings(context_budget=0)
    assert conversation.context_budget == 5000


def test_changed_messages_are_reported_once_for_the_store():
    conversation = new_conversation("gpt-4o", 120)
    for i in range(6):
        chat(conversation, f"question {i} " + "word " * 10, f"answer {i} " + "word " * 10)
    trimmed = {m.id for m in conversation.messages if m.state is MessageState.TRIMMED}
    assert trimmed and conversation.pop_changed_message_ids() == trimmed
    assert conversation.pop_changed_message_ids() == set()
    conversation.pin(conversation.messages[-1].id)
    assert conversation.pop_changed_message_ids() == {conversation.messages[-1].id}


def test_the_system_prompt_cannot_be_pinned_or_taken_out():
    conversation = new_conversation("gpt-4o", 1000)
    with pytest.raises(ConversationStateError):
        conversation.pin(conversation.messages[0].id)
    with pytest.raises(ConversationStateError):
        conversation.leave_context([conversation.messages[0].id], MessageState.TRIMMED)
