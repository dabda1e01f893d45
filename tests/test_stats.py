"""Dashboard figures computed from a conversation's record, and the charts drawn from them."""

import json

import pyarrow as pa
import pytest
from altair.utils.schemapi import validate_jsonschema
from altair.vegalite.v6.schema import load_schema

from core.backends import Usage
from core.charts import SERIES, TRIM_LOG_COLUMNS, dashboard_drawing, for_streamlit, gauge_spec, usage_spec
from core.context import DropOldest
from core.conversation import Conversation
from core.model_info import load_model_table
from core.settings import ChatSettings
from core.stats import (
    context_frame,
    context_gauge,
    context_rows,
    dashboard_figures,
    next_turn_drops,
    totals,
    trim_rows,
    trims_frame,
    turn_rows,
    turns_frame,
)
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


def assert_valid_vega_lite(spec):
    """The spec is JSON and Vega-Lite's own JSON schema (the one Altair ships) accepts it."""
    error = validate_jsonschema(json.loads(json.dumps(spec)), load_schema(), raise_error=False)
    assert error is None, error


def test_usage_chart_is_valid_vega_lite_and_draws_every_series():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6, usage_offset=1)
    turns = turns_frame(conversation)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation))
    assert_valid_vega_lite(spec)
    bars, budget, counted, reported, trim_marks = spec["layer"]
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "rule", "line", "point", "point"]
    # Every filtered layer draws something: its filter names a series that is in its data.
    rows = spec["datasets"]["usage"]
    assert {row["series"] for row in rows} == {name for name, _ in SERIES.values()}
    for layer, column in zip(
        (bars, budget, counted, reported),
        ("reply_tokens", "context_budget", "counted_prompt_tokens", "reported_prompt_tokens"),
        strict=True,
    ):
        assert layer["data"] == {"name": "usage"}
        (name,) = layer["transform"][0]["filter"]["oneOf"]
        assert name == SERIES[column][0]
        assert [(r["turn"], r["tokens"]) for r in rows if r["series"] == name] == list(
            zip(turns["turn"], turns[column], strict=True)
        )
    assert budget["mark"]["strokeDash"] and budget["encoding"]["x2"] == {"field": "end"}
    assert reported["mark"]["filled"] is False
    # One trim marker per trimming event, at its turn, with what it dropped in the tooltip.
    assert trim_marks["data"] == {"name": "trims"}
    markers = spec["datasets"]["trims"]
    assert [m["turn"] for m in markers] == [e.turn for e in conversation.trim_events]
    assert markers[0]["preview"].startswith("user: question 0")
    assert {t["field"] for t in trim_marks["encoding"]["tooltip"]} <= set(markers[0])
    # Half a turn of room either side of the turns.
    assert bars["encoding"]["x"]["scale"]["domain"] == [0.5, 6.5]


def test_gauge_chart_is_valid_vega_lite():
    conversation = new_conversation("sys", "gpt-4o", 1000)
    chat(conversation, 2)
    gauge = context_gauge(conversation)
    spec = gauge_spec(gauge)
    assert_valid_vega_lite(spec)
    assert spec["mark"]["type"] == "bar"
    parts = [(row["part"], row["tokens"]) for row in spec["datasets"]["gauge"]]
    assert parts == gauge.parts() and sum(tokens for _, tokens in parts) == 1000


def test_a_spec_vega_lite_rejects_fails_the_check():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 3)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation))
    spec["layer"][0]["mark"]["type"] = "bars"
    with pytest.raises(AssertionError):
        assert_valid_vega_lite(spec)


def test_charts_go_to_streamlit_with_their_data_in_arrow():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 4)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation))
    ready = for_streamlit(spec)
    assert {key: value for key, value in ready.items() if key != "datasets"} == {
        key: value for key, value in spec.items() if key != "datasets"
    }
    for name, rows in spec["datasets"].items():
        table = pa.ipc.open_stream(ready["datasets"][name]).read_all()
        assert table.to_pylist() == rows


def test_figures_and_drawing_are_built_once_per_version():
    table = load_model_table()
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 3)
    figures = dashboard_figures(conversation, POLICY, table)
    drawing = dashboard_drawing(figures)
    # Nothing changed: the same objects, nothing walked or built again.
    assert dashboard_figures(conversation, POLICY, table) is figures
    assert dashboard_drawing(figures) is drawing
    # Tables keep their columns when empty, and show what the frames show.
    assert drawing.trims.num_rows == len(conversation.trim_events) == 0
    assert drawing.trims.column_names == TRIM_LOG_COLUMNS
    turns = turns_frame(conversation)
    assert drawing.turns.to_pandas().astype(turns.dtypes).equals(turns)
    assert drawing.context.to_pandas().equals(context_frame(conversation, POLICY))
    # Each kind of change gives new figures that show it.
    changes = [
        lambda: conversation.add_user("one more question " + "about dumplings " * 5),
        lambda: POLICY.fit(conversation),  # 150 tokens: this trims
        lambda: conversation.add_assistant("steamed", Usage(prompt_tokens=1, completion_tokens=1)),
        lambda: conversation.pin(conversation.context_messages()[1].id),
        lambda: conversation.update_settings(context_budget=4096),
        lambda: conversation.update_settings(model="gpt-3.5-turbo"),
        lambda: conversation.regenerate(),
        lambda: conversation.record_summary(
            [], "dumplings, steamed", tokens_before=conversation.prompt_tokens, summarizer_model="gpt-4o"
        ),
        lambda: conversation.edit_summary("dumplings, steamed or fried"),
    ]
    for change in changes:
        before = dashboard_figures(conversation, POLICY, table)
        change()
        after = dashboard_figures(conversation, POLICY, table)
        assert after is not before
        assert after.gauge == context_gauge(conversation)
        assert after.turns == turn_rows(conversation)
        assert after.trims == trim_rows(conversation)
        assert after.context == context_rows(conversation, POLICY)
        assert list(after.next_drops) == next_turn_drops(conversation, POLICY)
        assert dashboard_drawing(after) is not drawing
    assert len(conversation.trim_events) == 1 and conversation.messages[-1].state == "replaced"
    assert len(conversation.summary_versions) == 2
    assert [row["turn"] for row in dashboard_figures(conversation, POLICY, table).mismatched] == [4]
