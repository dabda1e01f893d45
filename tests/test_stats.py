"""Dashboard figures computed from a conversation's record."""

import pytest

from core.backends import Usage
from core.charts import gauge_chart, usage_chart
from core.context import DropOldest
from core.conversation import Conversation
from core.model_info import load_model_table
from core.settings import ChatSettings
from core.stats import context_frame, context_gauge, next_turn_drops, totals, trims_frame, turns_frame
from core.tokens import count_prompt_tokens

POLICY = DropOldest()


def new_conversation(system: str, model: str, context_budget: int) -> Conversation:
    return Conversation(system, ChatSettings(model=model, context_budget=context_budget))


def chat(conversation: Conversation, n: int, usage_offset: int = 0) -> None:
    for i in range(n):
        conversation.add_user(f"question {i} " + "about dumplings " * 5)
        POLICY.fit(conversation)
        conversation.add_assistant(
            f"answer {i} " + "steam them " * 8,
            Usage(prompt_tokens=conversation.prompt_tokens + usage_offset, completion_tokens=20),
        )


def test_turns_frame_shows_counted_reported_and_difference():
    conversation = new_conversation("sys", "gpt-4o", 10_000)
    chat(conversation, 3, usage_offset=2)
    frame = turns_frame(conversation)
    assert list(frame["turn"]) == [1, 2, 3]
    assert list(frame["difference"]) == [2, 2, 2]
    assert list(frame["reply_tokens"]) == [20, 20, 20]
    assert (frame["context_budget"] == 10_000).all()


def test_trims_frame_lists_each_event_with_a_preview():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6)
    frame = trims_frame(conversation)
    assert len(frame) == len(conversation.trim_events) > 0
    first = frame.iloc[0]
    assert first["messages_dropped"] == 2
    assert first["tokens_before"] - first["tokens_after"] == first["tokens_freed"] > 0
    assert first["preview"].startswith("user: question 0")


def test_context_frame_lists_what_the_next_call_sends():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6)
    conversation.add_user("pending question")
    # Before the call: the in-context messages as they stand, summing to the prompt's tokens,
    # with the ones the policy will drop marked, in full.
    before = context_frame(conversation, POLICY)
    assert int(before["tokens"].sum()) == conversation.prompt_tokens
    marked = list(before["text"][before["next call"] == "dropped"])
    assert marked, "150 tokens cannot hold six exchanges and a question"
    sent = POLICY.fit(conversation)
    dropped = [conversation.message(i).content for i in conversation.trim_events[-1].dropped]
    assert marked == dropped
    frame = context_frame(conversation, POLICY)
    assert list(frame["role"]) == [m["role"] for m in sent] + ["(reply priming)"]
    assert list(frame["text"][:-1]) == [m["content"] for m in sent]
    assert set(frame["next call"]) == {"sent"}
    assert int(frame["tokens"].sum()) == count_prompt_tokens(sent, "gpt-4o")


def test_gauge_breaks_the_context_down():
    conversation = new_conversation("a system prompt", "gpt-4o", 1000)
    chat(conversation, 2)
    conversation.add_user("pending")
    gauge = context_gauge(conversation)
    context = conversation.context_messages()
    assert gauge.system == context[0].tokens
    assert gauge.newest == context[-1].tokens
    assert gauge.used == conversation.prompt_tokens
    assert gauge.free == 1000 - gauge.used
    assert gauge.frame()["tokens"].sum() == 1000


def test_next_turn_drops_predicts_the_next_trim():
    conversation = new_conversation("sys", "gpt-4o", 300)
    predictions = []
    for i in range(8):
        predicted = next_turn_drops(conversation, POLICY)
        events = len(conversation.trim_events)
        # Same size as every earlier question, which is what the prediction assumes.
        conversation.add_user(f"question {i} " + "about dumplings " * 5)
        POLICY.fit(conversation)
        actual = conversation.trim_events[-1].dropped if len(conversation.trim_events) > events else []
        assert predicted == actual
        predictions.append(predicted)
        conversation.add_assistant("steam them " * 8)
    assert any(predictions), "300 tokens cannot hold eight exchanges"


def test_totals_price_each_turn_and_flag_unknown_models():
    table = load_model_table()
    conversation = new_conversation("sys", "gpt-4o-mini", 10_000)
    chat(conversation, 2)
    result = totals(conversation, table)
    prompt = sum(t.reported_prompt_tokens for t in conversation.turns)
    assert (result.prompt_tokens, result.completion_tokens) == (prompt, 40)
    assert result.cost == pytest.approx((prompt * 0.15 + 40 * 0.60) / 1e6)
    conversation.update_settings(model="llama3.2")
    chat(conversation, 1)
    assert totals(conversation, table).cost is None


def test_charts_build_valid_vega_lite():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6)
    spec = usage_chart(turns_frame(conversation), trims_frame(conversation)).to_dict()
    assert len(spec["layer"]) == 5
    # Every filtered layer draws something: its filter names series that are in the data.
    series_rows = next(rows for rows in spec["datasets"].values() if rows and "series" in rows[0])
    present = {row["series"] for row in series_rows}
    filters = [layer["transform"][0]["filter"]["oneOf"] for layer in spec["layer"] if "transform" in layer]
    assert len(filters) == 4
    for names in filters:
        assert set(names) <= present, (names, present)
    assert [names for names in filters if "prompt" in names[0]] == [["prompt, counted"], ["prompt, API"]]
    assert gauge_chart(context_gauge(conversation)).to_dict()["mark"]["type"] == "bar"
