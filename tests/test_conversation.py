"""The Conversation contract: budget trimming, turn records, failures that lose nothing, export."""

import json
import math
import re
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.chat.context import DropOldest
from core.chat.conversation import Conversation, MessageState
from core.chat.settings import ChatSettings
from core.counting.tokens import count_prompt_tokens
from core.errors import ConversationImportError, ConversationStateError, PromptTooLong
from core.providers.backends import Usage

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

#: Text with lone surrogates, as json.loads makes of "\\ud800" escapes.
surrogate_text = st.text(
    alphabet=st.characters(categories=["Cs"]) | st.characters(codec="utf-8"), min_size=1, max_size=8
).filter(lambda text: any(0xD800 <= ord(ch) <= 0xDFFF for ch in text))
#: Numbers that crashed imports: beyond int64, beyond Python's 4,300-digit int-to-str limit,
#: negative and huge counts, and floats that are not finite.
crashing_numbers = st.one_of(
    st.integers(min_value=2**63 - 5, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.sampled_from([10**20, 2**31, 2**63, -(2**63) - 1]),
    # Built lazily: hypothesis cannot even repr a 5,000-digit int in a strategy.
    st.sampled_from([1, -1]).map(lambda sign: sign * 10**5000),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x)),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | crashing_numbers
    | surrogate_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | surrogate_text, children, max_size=4)
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
    _assert_storable(conversation)
    # Whatever is accepted is well-formed enough to carry on.
    if conversation.pending_user_message is None:
        conversation.add_user("carry on")
    try:
        sent = prepare(conversation)
    except PromptTooLong:
        return
    assert_well_formed(sent)


INT32_MAX = 2**31 - 1


def _assert_storable(conversation: Conversation) -> None:
    """What an import accepts can be exported as UTF-8 and stored (32-bit integer columns,
    VARCHAR(64)/(200) ids, UTC times), and its turns read 1..n naming real answers."""
    conversation.to_json().encode("utf-8")
    conversation.to_markdown().encode("utf-8")
    replies = {m.id for m in conversation.messages if m.role == "assistant"}
    for number, turn in enumerate(conversation.turns, start=1):
        assert turn.number == number
        assert turn.reply_id is None or turn.reply_id in replies
        counts = (
            turn.context_budget,
            turn.messages_sent,
            turn.counted_prompt_tokens,
            turn.counted_completion_tokens,
            turn.reported_prompt_tokens or 0,
            turn.reported_completion_tokens or 0,
        )
        assert all(0 <= count <= INT32_MAX for count in counts)
        assert turn.latency_s is None or math.isfinite(turn.latency_s)
    for event in conversation.trim_events:
        assert all(
            0 <= n <= INT32_MAX for n in (event.turn, event.tokens_before, event.tokens_after, event.budget)
        )
    for message in conversation.messages:
        message.created_at.astimezone(UTC)
        assert len(message.id) <= 64
    assert conversation.persona_id is None or len(conversation.persona_id) <= 200


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


VALID_EXPORT_JSON = json.dumps(VALID_EXPORT)
NUMBER_SPANS = [m.span() for m in re.finditer(r"(?<![\w.\"])-?\d+(?:\.\d+)?(?![\w\"])", VALID_EXPORT_JSON)]
STRING_SPANS = [m.span() for m in re.finditer(r'"(?:[^"\\]|\\.)*"', VALID_EXPORT_JSON)]


@settings(max_examples=200, deadline=None)
@given(
    span=st.sampled_from(NUMBER_SPANS),
    number=st.sampled_from(["9" * 5000, "-" + "1" * 4301, str(2**64), "-1", "1e999", "NaN", "Infinity", "0"]),
)
def test_import_fuzz_numbers_in_the_json_text(span, number):
    """Any number of a valid export's JSON replaced as text (json.loads refuses ints over 4,300
    digits with a ValueError, and reads NaN and Infinity)."""
    raw = VALID_EXPORT_JSON[: span[0]] + number + VALID_EXPORT_JSON[span[1] :]
    try:
        conversation = Conversation.from_json(raw)
    except ConversationImportError as error:
        assert str(error)
    else:
        _assert_storable(conversation)


@settings(max_examples=200, deadline=None)
@given(
    span=st.sampled_from(STRING_SPANS), escape=st.sampled_from(["\\ud800", "\\udfff", "a\\udc00b", "\\ud83d"])
)
def test_import_fuzz_lone_surrogates_in_the_json_text(span, escape):
    """Any string (or key) of a valid export holding a lone surrogate escape is refused clearly."""
    raw = VALID_EXPORT_JSON[: span[0]] + f'"{escape}"' + VALID_EXPORT_JSON[span[1] :]
    try:
        conversation = Conversation.from_json(raw)
    except ConversationImportError as error:
        assert str(error)
    else:  # pragma: no cover - every string is checked
        _assert_storable(conversation)


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
    assert {state.value for state in MessageState} == {
        "context",
        "trimmed",
        "unanswered",
        "replaced",
        "summarized",
    }
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


# --- imports that used to crash, or to store what cannot be stored -------------------------------


def _export_with(change) -> dict:
    data = json.loads(json.dumps(VALID_EXPORT))
    change(data)
    return data


def _set(path: tuple, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set(("settings", "context_budget"), 0), "context_budget"),
        (_set(("settings", "context_budget"), 2_000_001), "less than or equal to 2000000"),
        (_set(("settings", "context_budget"), 2**63), "beyond 64 bits"),
        (_set(("settings", "max_reply_tokens"), -1), "max_reply_tokens"),
        (_set(("settings", "sampling", "seed"), 2**64), "beyond 64 bits"),
        (_set(("settings", "sampling", "seed"), 10**5000), "beyond 64 bits"),
        (_set(("settings", "sampling", "temperature"), float("nan")), "not a finite number"),
        (_set(("messages", 1, "content"), "caf\udce9"), "lone surrogate"),
        (_set(("messages", 1, "id"), "\ud800"), "lone surrogate"),
        (_set(("persona_id",), "\udfff"), "lone surrogate"),
        (_set(("persona_id",), "p" * 201), "persona_id"),
        (_set(("messages", 1, "created_at"), "9999-12-31T23:59:59-14:00"), "out of range in UTC"),
        (_set(("turns", 0, "number"), 2), "numbered 1, 2, 3"),
        (_set(("turns", 1, "number"), 1), "numbered 1, 2, 3"),
        (_set(("turns", 0, "number"), -1), "turns[0].number"),
        (_set(("turns", 0, "counted_prompt_tokens"), -5), "counted_prompt_tokens"),
        (_set(("turns", 0, "reported_completion_tokens"), 10**20), "beyond 64 bits"),
        (_set(("turns", 0, "reported_completion_tokens"), 2**40), "reported_completion_tokens"),
        (_set(("turns", 0, "context_budget"), 10**9), "context_budget"),
        (_set(("turns", 0, "messages_sent"), 99), "more than the conversation holds"),
        (_set(("turns", 0, "latency_s"), float("inf")), "not a finite number"),
        (_set(("turns", 0, "latency_s"), -1.0), "latency_s"),
        (_set(("turns", 0, "reply_id"), "no-such-message"), "not an answer"),
        (_set(("turns", 0, "finish_reason"), "x" * 65), "finish_reason"),
        (_set(("trim_events", 0, "tokens_before"), -1), "tokens_before"),
        (_set(("trim_events", 0, "turn"), 99), "the conversation has 4 turns"),
    ],
)
def test_forged_and_out_of_range_imports_get_a_clear_error(change, problem):
    data = _export_with(change)
    with pytest.raises(ConversationImportError) as caught:
        Conversation.from_dict(data)
    assert problem in str(caught.value)


def test_a_turn_naming_a_user_message_or_another_turns_reply_is_refused():
    data = _export_with(lambda d: None)
    user_id = data["messages"][1]["id"]
    data["turns"][0]["reply_id"] = user_id
    with pytest.raises(ConversationImportError, match="not an answer"):
        Conversation.from_dict(data)
    data = _export_with(lambda d: None)
    data["turns"][1]["reply_id"] = data["turns"][0]["reply_id"]
    with pytest.raises(ConversationImportError, match="same reply"):
        Conversation.from_dict(data)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ('{"version": 1, "model": "gpt-4o", "context_budget": ' + "9" * 5000 + ', "messages": []}', "digits"),
        (
            '{"version": 1, "model": "gpt-4o", "context_budget": -' + "1" * 4400 + ', "messages": []}',
            "digits",
        ),
        ('{"version": 1, "model": "gpt-4o", "context_budget": 1e999, "messages": []}', "context_budget"),
        ('{"version": 1, "model": "gpt-4o", "context_budget": NaN, "messages": []}', "not a finite number"),
        (
            '{"version": 1, "model": "gpt-4o", "context_budget": 10, "messages": ['
            '{"role": "system", "content": "\\ud800"}]}',
            "lone surrogate",
        ),
        ('{"\\udc00": 1}', "lone surrogate"),
        (
            '{"version": 1, "model": "gpt-4o", "context_budget": 99999999, "messages": ['
            '{"role": "system", "content": "s"}]}',
            "context_budget",
        ),
    ],
)
def test_json_that_crashed_the_import_gets_a_clear_error(payload, problem):
    with pytest.raises(ConversationImportError) as caught:
        Conversation.from_json(payload)
    assert problem in str(caught.value)


def test_a_time_without_a_zone_is_taken_as_utc():
    data = _export_with(_set(("messages", 1, "created_at"), "2024-05-01T12:00:00"))
    conversation = Conversation.from_dict(data)
    assert conversation.messages[1].created_at.isoformat() == "2024-05-01T12:00:00+00:00"
