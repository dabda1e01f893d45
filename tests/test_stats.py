"""Dashboard figures computed from a conversation's record, and the charts drawn from them."""

import json
import re

import pyarrow as pa
import pytest
from altair.utils.schemapi import validate_jsonschema
from altair.vegalite.v6.schema import load_schema

from core.charts import (
    FREE_DASH,
    GAUGE_COLORS,
    GAUGE_NUMBER_INK,
    LIGHT_THEME_CHART_TEXT,
    NEUTRAL,
    OKABE_ITO,
    SERIES,
    TRIMS,
    USAGE_LEGENDS,
    dashboard_drawing,
    for_streamlit,
    gauge_labels,
    gauge_spec,
    in_theme,
    usage_spec,
)
from core.chat.context import DropOldest, Summarize
from core.chat.conversation import Conversation
from core.chat.settings import ChatSettings
from core.chat.summaries import offline_summary
from core.counting.model_info import load_model_table
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.i18n import translator
from core.providers.backends import Usage
from core.safe_markdown import page_markdown
from core.stats import (
    context_gauge,
    context_rows,
    dashboard_figures,
    next_turn_drops,
    totals,
    trim_rows,
    turn_rows,
)
from tests.apptest import images_in

EN = translator("en")

POLICY = DropOldest()


def new_conversation(system: str, model: str, context_budget: int) -> Conversation:
    return Conversation(system, ChatSettings(model=model, context_budget=context_budget))


def chat(conversation: Conversation, n: int, usage_offset: int = 0, cached_share: float = 0.0) -> None:
    """`n` turns; the server reports `usage_offset` more prompt tokens than counted and, when
    `cached_share` is set, that share of them as read from its cache."""
    for i in range(n):
        conversation.add_user(f"question {i} " + "about dumplings " * 5)
        POLICY.fit(conversation)
        prompt = conversation.prompt_tokens + usage_offset
        cached = int(prompt * cached_share) if cached_share else None
        conversation.add_assistant(
            f"answer {i} " + "steam them " * 8,
            Usage(prompt_tokens=prompt, completion_tokens=20, cached_prompt_tokens=cached),
        )


def test_turn_rows_show_counted_reported_and_difference():
    conversation = new_conversation("sys", "gpt-4o", 10_000)
    chat(conversation, 3, usage_offset=2)
    rows = turn_rows(conversation)
    assert [row["turn"] for row in rows] == [1, 2, 3]
    assert [row["difference"] for row in rows] == [2, 2, 2]
    assert [row["reply_tokens"] for row in rows] == [20, 20, 20]
    assert {row["context_budget"] for row in rows} == {10_000}


def test_trim_rows_list_each_event_with_a_preview():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6)
    rows = trim_rows(conversation)
    assert len(rows) == len(conversation.trim_events) > 0
    first = rows[0]
    assert first["messages_dropped"] == 2
    assert first["tokens_before"] - first["tokens_after"] == first["tokens_freed"] > 0
    assert first["preview"].startswith("user: question 0")


def test_context_rows_list_what_the_next_call_sends():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6)
    conversation.add_user("pending question")
    # Before the call: the in-context messages as they stand, summing to the prompt's tokens,
    # with the ones the policy will drop marked, in full.
    before = context_rows(conversation, POLICY)
    assert sum(row["tokens"] for row in before) == conversation.prompt_tokens
    marked = [row["text"] for row in before if row["next call"] == "dropped"]
    assert marked, "150 tokens cannot hold six exchanges and a question"
    sent = POLICY.fit(conversation)
    dropped = [conversation.message(i).content for i in conversation.trim_events[-1].dropped]
    assert marked == dropped
    rows = context_rows(conversation, POLICY)
    assert [row["role"] for row in rows] == [m["role"] for m in sent] + ["(reply priming)"]
    assert [row["text"] for row in rows[:-1]] == [m["content"] for m in sent]
    assert {row["next call"] for row in rows} == {"sent"}
    assert sum(row["tokens"] for row in rows) == count_prompt_tokens(sent, "gpt-4o")


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
    assert sum(tokens for _, tokens in gauge.parts()) == 1000
    assert gauge.summary == 0


def test_gauge_counts_the_running_summary():
    conversation = new_conversation("a system prompt", "gpt-4o", 1000)
    chat(conversation, 3)
    conversation.record_summary(
        [], "dumplings, steamed", tokens_before=conversation.prompt_tokens, summarizer_model="gpt-4o"
    )
    gauge = context_gauge(conversation)
    assert gauge.summary == conversation.summary_tokens > 0
    assert ("summary", gauge.summary) in gauge.parts()
    # The parts of "in context now" add up to what the next call sends.
    assert gauge.used == conversation.prompt_tokens
    assert sum(tokens for part, tokens in gauge.parts() if part != "free") == gauge.used


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


def test_totals_price_cached_tokens_and_say_what_caching_saved():
    table = load_model_table()
    conversation = new_conversation("sys", "gpt-4o-mini", 10_000)
    chat(conversation, 3)
    assert totals(conversation, table).cache_reported is False
    chat(conversation, 3, cached_share=0.5)
    result = totals(conversation, table)
    prompt = sum(t.prompt_tokens for t in conversation.turns)
    cached = sum(t.cached_tokens for t in conversation.turns)
    assert cached == sum(int(t.prompt_tokens * 0.5) for t in conversation.turns[3:]) > 0
    assert result.cache_reported and result.cached_tokens == cached
    assert result.cache_hit_rate == pytest.approx(cached / prompt)
    assert result.cost == pytest.approx(((prompt - cached) * 0.15 + cached * 0.075 + 120 * 0.60) / 1e6)
    assert result.cache_saved == pytest.approx(cached * (0.15 - 0.075) / 1e6)
    assert all(t.uncached_tokens == t.prompt_tokens - t.cached_tokens for t in conversation.turns)


def assert_valid_vega_lite(spec):
    """The spec is JSON and Vega-Lite's own JSON schema (the one Altair ships) accepts it."""
    error = validate_jsonschema(json.loads(json.dumps(spec)), load_schema(), raise_error=False)
    assert error is None, error


def layers_by_series(spec):
    """The usage chart's layers by the id of the one series each draws (its colour scale's one
    entry is the series' name)."""
    return {
        layer["name"].removeprefix("series_"): layer
        for layer in spec["layer"]
        if "color" in layer["encoding"]
    }


def series_name(series):
    return EN(f"chart.series.{series}")


def colours(spec):
    """Every colour a spec names, anywhere in it."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("color", "fill", "stroke") and isinstance(value, str):
                    found.add(value)
                elif key == "range" and all(isinstance(item, str) for item in value):
                    found.update(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in spec.items() if key not in ("datasets", "resolve")})
    return found


def test_usage_chart_is_valid_vega_lite_and_draws_every_series():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6, usage_offset=1, cached_share=0.5)
    turns = turn_rows(conversation)
    spec = usage_spec(turns, trim_rows(conversation), EN)
    assert_valid_vega_lite(spec)
    layers = layers_by_series(spec)
    # No summary in a drop-oldest conversation: no band, and no legend entry for one.
    assert list(layers) == ["counted", "reported", "cached", "reply", "budget", "trimmed"]
    counted, reported, cached, bars, budget, trim_marks = layers.values()
    marks = [layer["mark"]["type"] for layer in layers.values()]
    assert marks == ["line", "point", "point", "bar", "rule", "point"]
    # Every filtered layer draws something: its filter names a series that is in its data.
    rows = spec["datasets"]["usage"]
    assert {row["series"] for row in rows} == {series_name(series) for series, _ in SERIES.values()}
    for layer, column in zip(
        (bars, budget, counted, reported, cached),
        (
            "reply_tokens",
            "context_budget",
            "counted_prompt_tokens",
            "reported_prompt_tokens",
            "cached_prompt_tokens",
        ),
        strict=True,
    ):
        assert layer["data"] == {"name": "usage"}
        (name,) = layer["transform"][0]["filter"]["oneOf"]
        assert name == series_name(SERIES[column][0])
        assert [(r["turn"], r["tokens"]) for r in rows if r["series"] == name] == list(
            (row["turn"], row[column]) for row in turns
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
    # A budget near the data is on the scale, drawn as its dashed rule; no note.
    (top,) = {layer["encoding"]["y"]["scale"]["domain"][1] for layer in layers.values()}
    assert top >= 150 and "budget_note" not in {layer.get("name") for layer in spec["layer"]}


def test_usage_legend_symbols_match_the_marks():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6, usage_offset=1, cached_share=0.5)
    rows = turn_rows(conversation)
    for row in rows[2:]:
        row["summary_tokens"] = 25
    spec = usage_spec(rows, trim_rows(conversation), EN)
    assert_valid_vega_lite(spec)
    layers = layers_by_series(spec)
    # Every series drawn has its own legend (a shared one draws every entry with one symbol).
    assert set(layers) == set(USAGE_LEGENDS) == {series for series, _ in SERIES.values()} | {TRIMS[0]}
    assert spec["resolve"] == {"scale": {"color": "independent"}, "legend": {"color": "independent"}}
    symbols = {}
    for name, layer in layers.items():
        legend = layer["encoding"]["color"]["legend"]
        assert legend is not None and legend == USAGE_LEGENDS[name]
        assert layer["encoding"]["color"]["scale"]["domain"] == [series_name(name)]
        symbols[name] = (layer["mark"]["type"], legend["symbolType"])
    assert symbols == {
        "counted": ("line", "stroke"),
        "reported": ("point", "circle"),
        "cached": ("point", "diamond"),
        "reply": ("bar", "square"),
        "summary": ("bar", "square"),
        "budget": ("rule", "stroke"),
        "trimmed": ("point", "triangle-down"),
    }
    # Redundant encodings, repeated in the legend: dashed budget, hollow circles, down triangles.
    budget = layers["budget"]
    assert budget["mark"]["strokeDash"] == budget["encoding"]["color"]["legend"]["symbolDash"]
    assert "strokeDash" not in layers["counted"]["mark"]
    assert layers["reported"]["mark"]["filled"] is False
    assert layers["reported"]["encoding"]["color"]["legend"]["symbolFillColor"] == "transparent"
    assert layers["trimmed"]["mark"]["shape"] == "triangle-down"
    cached = layers["cached"]["mark"]
    assert cached["shape"] == "diamond" and cached["filled"]
    # The summary band spans each turn from 0 up to the summary's tokens.
    band = layers["summary"]
    assert band["encoding"]["y2"] == {"datum": 0} and band["encoding"]["x2"] == {"field": "end"}


def test_the_summary_band_is_each_turns_summary_tokens():
    conversation = new_conversation("sys", "gpt-4o", 300)
    policy = Summarize()
    for i in range(8):
        conversation.add_user(f"question {i} " + "about dumplings " * 5)
        policy.fit(conversation, complete=lambda messages: offline_summary(messages, tokenizer_for("gpt-4o")))
        conversation.add_assistant(f"answer {i} " + "steam them " * 8)
    summarized = [turn.summary_tokens for turn in conversation.turns]
    assert any(summarized), "300 tokens cannot hold eight exchanges"
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation), EN)
    assert_valid_vega_lite(spec)
    rows = spec["datasets"]["usage"]
    band = [(row["turn"], row["tokens"]) for row in rows if row["series"] == series_name("summary")]
    assert band == [(turn.number, turn.summary_tokens) for turn in conversation.turns]
    # No figure from an API (none was reported): no circles, and no legend entry for them.
    assert set(layers_by_series(spec)) == {"counted", "reply", "summary", "budget"}
    # The band sits under the prompt line: the prompt sent includes the summary.
    assert all(turn.summary_tokens <= turn.counted_prompt_tokens for turn in conversation.turns)


def test_the_y_scale_follows_the_data_under_a_far_higher_budget():
    conversation = new_conversation("sys", "gpt-4o", 64_000)
    chat(conversation, 5)
    turns = turn_rows(conversation)
    largest = max(max(row["counted_prompt_tokens"], row["reported_prompt_tokens"]) for row in turns)
    assert largest < 400
    spec = usage_spec(turns, trim_rows(conversation), EN)
    assert_valid_vega_lite(spec)
    layers = layers_by_series(spec)
    # Every layer's y scale ends at the data, not at the budget: usage is not a flat line at 0.
    (domain,) = {tuple(layer["encoding"]["y"]["scale"]["domain"]) for layer in layers.values()}
    assert domain == (0, largest)
    # The budget is named in a note at the top, not drawn as a rule (nor listed as one).
    assert "budget" not in layers and all(layer["mark"]["type"] != "rule" for layer in spec["layer"])
    (note,) = [layer for layer in spec["layer"] if layer.get("name") == "budget_note"]
    assert note["mark"]["type"] == "text"
    assert note["data"]["values"] == [{"note": "budget 64,000 ↑"}]
    # A budget that changes to one near the data is drawn again, only where it is on the scale.
    conversation.update_settings(context_budget=500)
    chat(conversation, 1)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation), EN)
    assert_valid_vega_lite(spec)
    budget = layers_by_series(spec)["budget"]
    assert {"filter": {"field": "tokens", "lte": 500}} in budget["transform"]
    assert budget["encoding"]["y"]["scale"]["domain"] == [0, 500]


def test_charts_use_only_colour_blind_safe_colours():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6, usage_offset=1)
    rows = turn_rows(conversation)
    rows[-1]["summary_tokens"] = 20
    big = new_conversation("sys", "gpt-4o", 64_000)
    chat(big, 2)
    specs = [
        usage_spec(rows, trim_rows(conversation), EN),
        usage_spec(turn_rows(big), trim_rows(big), EN),
        gauge_spec(context_gauge(conversation), EN),
    ]
    palette = set(OKABE_ITO.values())
    assert palette == {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"}
    used = set()
    for spec in specs:
        used |= colours(spec)
    # Data in Okabe-Ito's colours; a neutral grey for the trim markers and the free room (black
    # vanished on the dark theme); white and black for the numbers written on the gauge's parts.
    assert used and used <= palette | {NEUTRAL, "#ffffff"}, used - palette
    # Each series and gauge part its own colour.
    series_colours = [colour for _, colour in SERIES.values()] + [TRIMS[1]]
    assert len(set(series_colours)) == len(series_colours)
    assert len(set(GAUGE_COLORS.values())) == len(GAUGE_COLORS)


def test_gauge_chart_is_valid_vega_lite():
    conversation = new_conversation("sys", "gpt-4o", 1000)
    chat(conversation, 2)
    gauge = context_gauge(conversation)
    spec = gauge_spec(gauge, EN)
    assert_valid_vega_lite(spec)
    used, free, numbers = spec["layer"]
    assert [layer["mark"]["type"] for layer in (used, free, numbers)] == ["bar", "bar", "text"]
    expected = [
        (f"{number} {EN(f'gauge.part.{part}')}", tokens)
        for number, (part, tokens) in enumerate(gauge.parts(), start=1)
    ]
    # Each part by its number and name, in the legend, the tooltip and the caption alike.
    parts = [(row["part"], row["tokens"]) for row in spec["datasets"]["gauge"]]
    assert parts == expected
    assert [(label, tokens) for _, label, tokens in gauge_labels(gauge, EN)] == parts
    assert sum(tokens for _, tokens in parts) == 1000
    # Each part from where the one before it ends.
    ends = [row["end"] for row in spec["datasets"]["gauge"]]
    assert [row["start"] for row in spec["datasets"]["gauge"]] == [0, *ends[:-1]] and ends[-1] == 1000
    # A legend names every part in the bar's order: the used ones filled, the free room a dashed
    # outline, as drawn.
    legend_entries = []
    for layer in (used, free):
        color = layer["encoding"]["color"]
        assert color["legend"] is not None and color["legend"]["symbolType"] == "square"
        assert color["scale"]["domain"] == layer["transform"][0]["filter"]["oneOf"]
        legend_entries += color["scale"]["domain"]
    assert legend_entries == [label for label, _ in parts]
    assert used["mark"].get("filled", True)
    assert free["mark"]["filled"] is False
    assert free["mark"]["strokeDash"] == free["encoding"]["color"]["legend"]["symbolDash"] == FREE_DASH
    assert free["encoding"]["color"]["legend"]["symbolFillColor"] == "transparent"
    # The numbers: on the used parts wide enough, in ink readable on each part's colour.
    assert numbers["encoding"]["text"] == {"field": "number"}
    assert numbers["encoding"]["color"] == {"field": "ink", "type": "nominal", "scale": None}
    for row in spec["datasets"]["gauge"]:
        part = next(p for p in GAUGE_COLORS if row["part"].endswith(EN(f"gauge.part.{p}")))
        assert row["number"] == row["part"].split()[0]
        if part != "free":
            assert contrast(row["ink"], GAUGE_COLORS[part]) >= 4.5, (part, row["ink"])
    # The chart grows to hold its axis and legend (the bar alone was drawn, 28 px tall, clipped).
    assert spec["autosize"] == {"type": "fit-x", "contains": "padding"}


def test_neutral_marks_show_on_both_themes():
    """The free room's outline and the trim markers: 3:1 or more (WCAG 1.4.11) on white and on
    dark backgrounds."""
    for background in ("#ffffff", "#0e1117", "#262730"):
        assert contrast(NEUTRAL, background) >= 3, background
    assert set(GAUGE_NUMBER_INK.values()) == {"#000000", "#ffffff"}


def relative_luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two #rrggbb colours."""
    high, low = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_chart_text_is_readable_on_the_light_theme():
    """Axis, legend and title text 4.5:1 or more on white (WCAG AA) in the light theme (or a
    browser that has not said its theme); the dark theme keeps Streamlit's, which passes
    (tests/browser/test_accessibility.py measures both)."""
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 3)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation), EN)
    for theme in ("light", None):
        themed = in_theme(spec, theme)
        assert_valid_vega_lite(themed)
        config = themed["config"]
        for part in ("axis", "legend"):
            assert config[part]["labelColor"] == config[part]["titleColor"] == LIGHT_THEME_CHART_TEXT
        assert config["title"]["color"] == LIGHT_THEME_CHART_TEXT
        assert themed["layer"] == spec["layer"]
    assert contrast(LIGHT_THEME_CHART_TEXT, "#ffffff") >= 4.5
    assert in_theme(spec, "dark") == spec
    assert "config" not in spec


def test_a_spec_vega_lite_rejects_fails_the_check():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 3)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation), EN)
    spec["layer"][0]["mark"]["type"] = "lines"
    with pytest.raises(AssertionError):
        assert_valid_vega_lite(spec)


def test_charts_go_to_streamlit_with_their_data_in_arrow():
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 4)
    spec = usage_spec(turn_rows(conversation), trim_rows(conversation), EN)
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
    drawing = dashboard_drawing(figures, EN)
    # Nothing changed: the same objects, nothing walked or built again.
    assert dashboard_figures(conversation, POLICY, table) is figures
    assert dashboard_drawing(figures, EN) is drawing
    # Tables keep their columns when empty, and show what the frames show.
    assert drawing.trim_log.num_rows == len(conversation.trim_events) == 0
    assert drawing.trim_log.column_names == ["turn", "dropped", "before", "after", "what was dropped"]
    assert drawing.turns.to_pylist() == turn_rows(conversation)
    context = context_rows(conversation, POLICY)
    shown = drawing.next_call
    assert shown.column_names == ["role", "tokens", "next call", "text"]
    assert shown["tokens"].to_pylist() == [row["tokens"] for row in context]
    assert shown["text"].to_pylist() == [row["text"] for row in context]
    assert shown["role"].to_pylist()[-1] == "(reply priming)"
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
        assert dashboard_drawing(after, EN) is not drawing
    assert len(conversation.trim_events) == 1 and conversation.messages[-1].state == "replaced"
    assert len(conversation.summary_versions) == 2
    assert [row["turn"] for row in dashboard_figures(conversation, POLICY, table).mismatched] == [4]


def test_the_shown_tables_are_in_the_page_language_and_load_no_image():
    """`st.table` renders its cells as Markdown: a message that hides an image shows it as a link,
    in the next call's table and in the trimming log (whole text, its role translated)."""
    trick = "look ![a [b] c](http://h/p.png) and $5"
    conversation = new_conversation("sys", "gpt-4o", 150)
    conversation.add_user(trick)
    conversation.add_assistant("noted " + "dumplings " * 20)
    chat(conversation, 3)  # 150 tokens: the oldest exchange (the trick) is trimmed
    figures = dashboard_figures(conversation, POLICY, load_model_table())
    assert figures.trims and figures.trim_dropped[0][0] == ("user", trick)
    drawing = dashboard_drawing(figures, translator("zh-CN"))
    log = drawing.trim_log.to_pylist()
    assert list(log[0]) == ["轮次", "丢弃", "裁剪前", "裁剪后", "丢弃的内容"]
    dropped_text = list(log[0].values())[-1]
    assert page_markdown(trick) in dropped_text and "用户" in dropped_text
    assert images_in(dropped_text) == [] and images_in(trick) == ["http://h/p.png"]
    shown = dashboard_drawing(figures, EN).next_call.to_pylist()
    assert all(images_in(row["text"]) == [] for row in shown)
    assert all(re.search(r"[\u4e00-\u9fff]", column) for column in drawing.next_call.column_names)


def test_chart_titles_legends_and_tooltips_follow_the_page_language():
    """Under Chinese, every text a chart shows (titles, series and part names, notes) is Chinese:
    no English word but the unit "token"."""
    zh = translator("zh-CN")
    conversation = new_conversation("sys", "gpt-4o", 150)
    chat(conversation, 6, usage_offset=1, cached_share=0.5)
    big = new_conversation("sys", "gpt-4o", 64_000)
    chat(big, 2)
    specs = [
        usage_spec(turn_rows(conversation), trim_rows(conversation), zh),
        usage_spec(turn_rows(big), trim_rows(big), zh),
        gauge_spec(context_gauge(conversation), zh),
    ]
    shown: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("title", "note", "series", "part") and isinstance(value, str):
                    shown.append(value)
                elif key == "calculate" and isinstance(value, str) and value.startswith('"'):
                    shown.append(json.loads(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for spec in specs:
        walk(spec)
    assert "已裁剪" in shown and "轮次" in shown and any("预算" in text for text in shown)
    # Each chart's heading is its own title.
    assert [spec["title"] for spec in specs] == ["每轮 token 数", "每轮 token 数", "当前上下文"]
    english = {word for text in shown for word in re.findall(r"[A-Za-z]+", text)} - {"token"}
    assert not english, english
