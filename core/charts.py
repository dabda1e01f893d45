"""The dashboard's charts as plain Vega-Lite specs (dicts), built once per recorded change.

Not Altair objects: Altair checks a chart against the Vega-Lite JSON schema every time it turns
it into a spec, and on a page that reruns its script on every interaction that check was most of
a rerun. These dicts are checked against the same schema once, in the tests
(tests/test_stats.py), and `dashboard_drawing` builds them, and the dashboard's tables, once per
version of the figures, with their data already in Arrow, the form Streamlit sends to the
browser: an unchanged conversation costs no chart or table work.
"""

from __future__ import annotations

import json
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]  # ships with Streamlit, untyped

from core.i18n import Translator
from core.safe_markdown import page_markdown
from core.stats import TURN_COLUMNS, ContextGauge, DashboardFigures, Row

if TYPE_CHECKING:
    from core.chat.replay import ReplayComparison
    from core.compare.comparison import ComparisonSnapshot
    from core.compare.leaderboard import Contestant, Leaderboard

Spec = dict[str, Any]
#: The page's text in its language (a `core.i18n.Translator`): `text("chart.axis.turn")`. Every
#: title, legend entry and tooltip label a chart shows comes from it. A chart's heading is its
#: own title (drawn by Vega in Streamlit's style; a screen reader meets it in the chart as "Title
#: text 'Tokens per turn'"), not a text element before it: an element costs every rerun.
Text = Callable[..., str]

#: The Vega-Lite major version Streamlit's frontend draws with.
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"

#: The Okabe-Ito palette: told apart under protanopia, deuteranopia and tritanopia. Every colour
#: the dashboard's charts draw data with is one of these (or `NEUTRAL` grey), and each series is
#: also told apart by its mark (line, hollow circle, bar, dashed rule, triangle, band), which its
#: legend symbol repeats; each part of the gauge by its number.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}

#: Marks that are neither data series nor parts (the trim markers, the gauge's free room): a grey
#: 3:1 or more on both themes' backgrounds (WCAG 1.4.11; black vanished on the dark one).
NEUTRAL = "#888888"

# turn_rows column -> (series id, colour). A series is shown as `chart.series.<id>` in the page's
# language, and every layer below filters on that name.
SERIES = {
    "counted_prompt_tokens": ("counted", OKABE_ITO["blue"]),
    "reported_prompt_tokens": ("reported", OKABE_ITO["orange"]),
    "cached_prompt_tokens": ("cached", OKABE_ITO["sky"]),
    "reply_tokens": ("reply", OKABE_ITO["green"]),
    "context_budget": ("budget", OKABE_ITO["vermillion"]),
    "summary_tokens": ("summary", OKABE_ITO["purple"]),
}
#: The trim markers' series id and colour.
TRIMS = ("trimmed", NEUTRAL)
#: The budget is left out of the y scale, and named in a note at the top instead of drawn as a
#: rule, when it is more than this many times the largest figure drawn: at a 64,000-token budget
#: with 300-token prompts, a scale up to the budget draws the usage as a flat line at 0.
BUDGET_OFF_SCALE = 3
BUDGET_DASH = [6, 4]
# ContextGauge part -> colour, left to right. "free" is drawn hollow (a dashed outline).
GAUGE_COLORS = {
    "system": OKABE_ITO["blue"],
    "summary": OKABE_ITO["purple"],
    "pinned": OKABE_ITO["orange"],
    "history": OKABE_ITO["sky"],
    "newest": OKABE_ITO["green"],
    "priming": OKABE_ITO["vermillion"],
    "free": NEUTRAL,
}
#: The colour of a part's number on the gauge: black, and white on the blue (each 4.5:1 or more
#: on its part's colour; tests/test_stats.py checks).
GAUGE_NUMBER_INK = {"default": OKABE_ITO["black"], "system": "#ffffff"}
#: The gauge's bar, and the gap that parts each from the next (its colour is the page's, whichever
#: the theme).
GAUGE_BAR_PX = 26
FREE_DASH = [4, 3]
GAUGE_GAP_PX = 2
#: The least share of the budget a part needs to have its number written on it (a digit needs
#: about 12 px; the gauge is about 330 px wide on a phone).
GAUGE_NUMBER_MIN_SHARE = 0.04
# A trim marker's tooltip: field, type, format; each titled `chart.trim.<field>`.
TRIM_TOOLTIP = (
    ("turn", "quantitative", None),
    ("messages_dropped", "quantitative", None),
    ("tokens_freed", "quantitative", ","),
    ("tokens_before", "quantitative", ","),
    ("tokens_after", "quantitative", ","),
    ("preview", "nominal", None),
)
# Each layer has its own colour scale, so its own legend, whose symbol is set to match its mark
# (a layered chart's shared legend draws every entry with one layer's symbol).
# The usage chart's legends stand one under another at its right (a row of them would not fit a
# narrow column: Vega does not wrap legends); the gauge's under it.
_LEGEND = {"orient": "right", "title": None, "labelLimit": 0}


def _legend(**symbol: Any) -> Spec:
    return {**_LEGEND, **symbol}


#: Series id -> the legend symbol its mark is drawn with (`usage_spec`), in the legends' order.
USAGE_LEGENDS: dict[str, Spec] = {
    "counted": _legend(symbolType="stroke", symbolStrokeWidth=2),
    "reported": _legend(symbolType="circle", symbolFillColor="transparent", symbolStrokeWidth=1.5),
    "cached": _legend(symbolType="diamond"),
    "reply": _legend(symbolType="square", symbolOpacity=0.6),
    "summary": _legend(symbolType="square", symbolOpacity=0.45),
    "budget": _legend(symbolType="stroke", symbolDash=BUDGET_DASH, symbolStrokeWidth=2),
    "trimmed": _legend(symbolType="triangle-down"),
}


def usage_series(turns: list[Row], text: Text) -> list[Row]:
    """The per-turn rows (`core.stats.turn_rows`) in long form, one row per (turn, series) that
    has a value, the series by its name in the page's language."""
    return [
        {"turn": row["turn"], "series": text(f"chart.series.{series}"), "tokens": row[column]}
        for column, (series, _) in SERIES.items()
        for row in turns
        if row[column] is not None
    ]


def usage_scale(turns: list[Row], trims: list[Row]) -> tuple[int, list[int]]:
    """The top of the usage chart's y scale, and the budgets left off it (those more than
    BUDGET_OFF_SCALE times the largest figure drawn; the chart names the largest in a note)."""
    data = max(
        [row[column] or 0 for row in turns for column in SERIES if column != "context_budget"]
        + [row["tokens_before"] for row in trims],
        default=0,
    )
    budgets = sorted({row["context_budget"] for row in turns})
    off = [budget for budget in budgets if budget > BUDGET_OFF_SCALE * data]
    on = [budget for budget in budgets if budget not in off]
    return max([data, *on, 1]), off


def usage_spec(turns: list[Row], trims: list[Row], text: Text) -> Spec:
    """Per-turn prompt tokens (counted vs reported, and the part served from the server's cache)
    with the running summary's share as a band at
    their bottom, reply tokens and the budget, with trims marked (from `core.stats.turn_rows` and
    `trim_rows`). The y scale follows the data: a budget far above it is named, not drawn."""
    # Half a turn of room either side, so the first and last bars are drawn whole.
    last_turn = max((row["turn"] for row in turns), default=1)
    turn_scale = {"domain": [0.5, last_turn + 0.5], "nice": False}
    turn_title = text("chart.axis.turn")
    x = {
        "field": "turn",
        "type": "quantitative",
        "title": turn_title,
        "scale": turn_scale,
        "axis": {"tickMinStep": 1, "format": "d"},
    }
    top, off_scale = usage_scale(turns, trims)
    tokens_title = text("chart.axis.tokens")
    y = {"field": "tokens", "type": "quantitative", "title": tokens_title, "scale": {"domain": [0, top]}}
    tooltip = [
        {"field": "turn", "type": "quantitative", "title": turn_title},
        {"field": "series", "type": "nominal", "title": text("chart.axis.series")},
        {"field": "tokens", "type": "quantitative", "format": ",", "title": tokens_title},
    ]

    def color(series: str, colour: str) -> Spec:
        return {
            "field": "series",
            "type": "nominal",
            "scale": {"domain": [text(f"chart.series.{series}")], "range": [colour]},
            "legend": USAGE_LEGENDS[series],
        }

    def series_layer(column: str, mark: Spec, **encoding: Any) -> Spec:
        series, colour = SERIES[column]
        name = text(f"chart.series.{series}")
        return {
            "name": _layer_name(series),
            "data": {"name": "usage"},
            "transform": [{"filter": {"field": "series", "oneOf": [name]}}],
            "mark": mark,
            "encoding": {"x": x, "y": y, "color": color(series, colour), "tooltip": tooltip, **encoding},
        }

    def per_turn(layer: Spec) -> Spec:
        """`layer` drawn across its whole turn (half a turn either side)."""
        layer["transform"] += [
            {"calculate": "datum.turn - 0.5", "as": "start"},
            {"calculate": "datum.turn + 0.5", "as": "end"},
        ]
        layer["encoding"] |= {
            "x": {"field": "start", "type": "quantitative", "title": turn_title, "scale": turn_scale},
            "x2": {"field": "end"},
        }
        return layer

    # The running summary's tokens, a band across each turn at the bottom of the prompt line (the
    # prompt includes them); only where a turn sent a summary.
    summary = per_turn(series_layer("summary_tokens", {"type": "bar", "opacity": 0.45}))
    summary["transform"].insert(1, {"filter": "datum.tokens > 0"})
    summary["encoding"]["y2"] = {"datum": 0}
    bars = series_layer("reply_tokens", {"type": "bar", "opacity": 0.6, "width": 8})
    # The budget as one dashed segment per turn: visible from the first turn, and steps where
    # the user changed it. Budgets far above the data are left off the scale.
    budget = per_turn(
        series_layer("context_budget", {"type": "rule", "strokeDash": BUDGET_DASH, "strokeWidth": 2})
    )
    if off_scale:
        budget["transform"].insert(1, {"filter": {"field": "tokens", "lte": top}})
    # Counted as a line, reported as hollow circles: where they agree, the circles sit on the line.
    counted = series_layer("counted_prompt_tokens", {"type": "line", "strokeWidth": 2})
    reported = series_layer(
        "reported_prompt_tokens", {"type": "point", "size": 70, "filled": False, "strokeWidth": 1.5}
    )
    # What the server read from its prompt cache, as filled diamonds under the prompt it is part of.
    cached = series_layer(
        "cached_prompt_tokens", {"type": "point", "shape": "diamond", "size": 60, "filled": True}
    )
    trim_series, trim_colour = TRIMS
    trim_marks = {
        "name": _layer_name(trim_series),
        "data": {"name": "trims"},
        "transform": [{"calculate": _vega_string(text(f"chart.series.{trim_series}")), "as": "series"}],
        "mark": {"type": "point", "shape": "triangle-down", "size": 160, "filled": True},
        "encoding": {
            "x": x,
            "y": {"field": "tokens_before", "type": "quantitative", "scale": y["scale"]},
            "color": color(trim_series, trim_colour),
            "tooltip": [
                {
                    "field": field,
                    "type": kind,
                    "title": text(f"chart.trim.{field}"),
                    **({"format": fmt} if fmt else {}),
                }
                for field, kind, fmt in TRIM_TOOLTIP
            ],
        },
    }
    layers = [counted, reported, cached, bars, summary, budget, trim_marks]
    # Only the series drawn have a layer, so a legend entry: no API figure offline, no band
    # without a summary, no budget rule when it is off the scale, no marker without a trim.
    has = {
        "reported": any(row["reported_prompt_tokens"] is not None for row in turns),
        "cached": any(row["cached_prompt_tokens"] for row in turns),
        "summary": any(row["summary_tokens"] for row in turns),
        "budget": len(off_scale) < len({row["context_budget"] for row in turns}),
        "trimmed": bool(trims),
    }
    layers = [layer for layer in layers if has.get(_series_of(layer), True)]
    if off_scale:
        # Named above the top right of the plot, above the scale it is left off.
        layers.append(budget_note(text("chart.budget_off_scale", budget=off_scale[-1])))
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": text("chart.usage.title"),
        "height": 240,
        "layer": layers,
        "resolve": {"scale": {"color": "independent"}, "legend": {"color": "independent"}},
        "datasets": {"usage": usage_series(turns, text), "trims": trims},
    }


def budget_note(text: str) -> Spec:
    """A budget left off the y scale, named above the top right of the plot."""
    return {
        "name": "budget_note",
        "data": {"values": [{"note": text}]},
        "mark": {
            "type": "text",
            "align": "right",
            "baseline": "bottom",
            "dy": -4,
            "fontWeight": "bold",
            "color": SERIES["context_budget"][1],
        },
        "encoding": {"text": {"field": "note"}, "x": {"value": "width"}, "y": {"value": 0}},
    }


def _layer_name(series: str) -> str:
    return f"series_{series}"


def _series_of(layer: Spec) -> str:
    """The id of the series a usage layer draws (its legend's one entry)."""
    return str(layer.get("name", "")).removeprefix("series_")


def _vega_string(value: str) -> str:
    """`value` as a Vega expression string literal (JSON's string syntax is one)."""
    return json.dumps(value)


def gauge_labels(gauge: ContextGauge, text: Text) -> list[tuple[str, str, int]]:
    """(part, its label, tokens), left to right. A label is the part's number and name ("2
    summary"): the number is written on the part in the bar too, so parts are told apart by more
    than their colour, and each part keeps its number whether or not the others are drawn."""
    return [
        (part, f"{number} {text(f'gauge.part.{part}')}", tokens)
        for number, (part, tokens) in enumerate(gauge.parts(), start=1)
    ]


def gauge_spec(gauge: ContextGauge, text: Text) -> Spec:
    """One bar: what fills the context budget now, part by part, left to right, a gap between
    parts, each wide enough numbered on it, the free room a dashed outline; a legend names each
    part by its number, the axis below says the budget. The bar is `GAUGE_BAR_PX` tall and the
    chart grows downwards to hold the axis and legend (`autosize` fit-x: fitted to the width only)."""
    labelled = gauge_labels(gauge, text)
    labels = {part: label for part, label, _ in labelled}
    parts: list[Row] = []
    start = 0
    for order, (part, label, tokens) in enumerate(labelled):
        parts.append(
            {
                "part": label,
                "tokens": tokens,
                "order": order,
                "start": start,
                "end": start + tokens,
                "middle": start + tokens / 2,
                "number": str(order + 1),
                "ink": GAUGE_NUMBER_INK.get(part, GAUGE_NUMBER_INK["default"]),
            }
        )
        start += tokens
    total = max(start, 1)
    used = [part for part in GAUGE_COLORS if part != "free"]
    tooltip = [
        {"field": "part", "type": "nominal", "title": text("chart.gauge.part")},
        {"field": "tokens", "type": "quantitative", "format": ",", "title": text("chart.axis.tokens")},
    ]
    x = {
        "field": "start",
        "type": "quantitative",
        "title": (
            text("chart.gauge.axis_fitted", budget=gauge.budget, setting=gauge.budget_setting)
            if gauge.budget_setting is not None
            else text("chart.gauge.axis", budget=gauge.budget)
        ),
        "scale": {"domain": [0, total], "nice": False},
    }

    def layer(ids: list[str], mark: Spec, legend: Spec) -> Spec:
        names = [labels[part] for part in ids]
        return {
            "transform": [{"filter": {"field": "part", "oneOf": names}}, {"filter": "datum.tokens > 0"}],
            "mark": {**mark, "height": GAUGE_BAR_PX, "x2Offset": -GAUGE_GAP_PX},
            "encoding": {
                "x": x,
                "x2": {"field": "end"},
                "color": {
                    "field": "part",
                    "type": "nominal",
                    "scale": {"domain": names, "range": [GAUGE_COLORS[part] for part in ids]},
                    "legend": {**_LEGEND, "orient": "bottom", **legend},
                },
                "tooltip": tooltip,
            },
        }

    # A part's number on it, where the part is wide enough for it.
    numbers = {
        "transform": [
            {"filter": {"field": "part", "oneOf": [labels[part] for part in used]}},
            {"filter": f"datum.tokens >= {GAUGE_NUMBER_MIN_SHARE} * {total}"},
        ],
        "mark": {"type": "text", "fontWeight": "bold", "align": "center", "baseline": "middle"},
        "encoding": {
            "x": {**x, "field": "middle"},
            "text": {"field": "number"},
            "color": {"field": "ink", "type": "nominal", "scale": None},
            "tooltip": tooltip,
        },
    }
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": text("chart.gauge.title"),
        "height": GAUGE_BAR_PX,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "data": {"name": "gauge"},
        "layer": [
            # Two columns: the free room's legend stands beside this one, within a phone's width.
            layer(used, {"type": "bar"}, {"symbolType": "square", "columns": 2}),
            layer(
                ["free"],
                {"type": "bar", "filled": False, "strokeDash": FREE_DASH, "strokeWidth": 1.5},
                {"symbolType": "square", "symbolFillColor": "transparent", "symbolDash": FREE_DASH},
            ),
            numbers,
        ],
        "resolve": {"scale": {"color": "independent"}, "legend": {"color": "independent"}},
        "datasets": {"gauge": parts},
    }


def for_streamlit(spec: Spec) -> Spec:
    """`spec` with its named datasets as Arrow IPC bytes, the form `st.vega_lite_chart` sends to
    the browser: serialized here once, instead of by Streamlit on every rerun."""
    datasets = {name: _arrow(pa.Table.from_pylist(rows)) for name, rows in spec.get("datasets", {}).items()}
    return {**spec, "datasets": datasets}


_INTEGER = pa.int64()
# The dashboard's tables' columns and their Arrow types, so that an empty table keeps its columns.
_TYPES = {
    # core.stats.TURN_COLUMNS
    "turn": _INTEGER,
    "counted_prompt_tokens": _INTEGER,
    "reported_prompt_tokens": _INTEGER,
    "cached_prompt_tokens": _INTEGER,
    "difference": _INTEGER,
    "reply_tokens": _INTEGER,
    "context_budget": _INTEGER,
    "summary_tokens": _INTEGER,
    "messages_sent": _INTEGER,
    "latency_s": pa.float64(),
    "interrupted": pa.bool_(),
}
#: The columns of the per-turn rows the mismatch table shows.
MISMATCH_COLUMNS = ["turn", "counted_prompt_tokens", "reported_prompt_tokens", "difference"]


@dataclass(frozen=True)
class DashboardDrawing:
    """What the dashboard hands Streamlit, in the form Streamlit sends it to the browser: chart
    specs with Arrow data, and tables as Arrow tables (which `st.dataframe` sends as they are,
    where a pandas frame is converted again on every rerun)."""

    #: None until the first turn is recorded.
    usage: Spec | None
    gauge: Spec
    #: What the next call sends (`core.stats.context_rows`): role, tokens, what the call does
    #: with it and the whole text, under the page's headers (for `st.table`).
    next_call: pa.Table
    #: Each trim with the whole text of what it dropped, under the page's headers.
    trim_log: pa.Table
    #: Every turn (`core.stats.turn_rows`).
    turns: pa.Table
    #: The turns whose counted and reported prompt tokens differ.
    mismatched: pa.Table


_drawings: weakref.WeakKeyDictionary[DashboardFigures, dict[str, DashboardDrawing]] = (
    weakref.WeakKeyDictionary()
)


def dashboard_drawing(figures: DashboardFigures, text: Translator) -> DashboardDrawing:
    """The charts and tables of `figures` in `text`'s language, built once per figures object
    (which `core.stats.dashboard_figures` builds once per version of a conversation) and language."""
    drawings = _drawings.setdefault(figures, {})
    drawing = drawings.get(text.language)
    if drawing is None:
        turns, trims = figures.turns, figures.trims
        drawing = drawings[text.language] = DashboardDrawing(
            usage=for_streamlit(usage_spec(turns, trims, text)) if turns else None,
            gauge=for_streamlit(gauge_spec(figures.gauge, text)),
            next_call=next_call_table(figures.context, text),
            trim_log=trim_log_table(trims, figures.trim_dropped, text),
            turns=_table(turns, TURN_COLUMNS),
            mismatched=_table(figures.mismatched, MISMATCH_COLUMNS),
        )
    return drawing


def _roles(text: Text) -> dict[str, str]:
    return {
        "system": text("dashboard.role.system"),
        "user": text("dashboard.role.user"),
        "assistant": text("dashboard.role.assistant"),
        "(reply priming)": text("dashboard.role.priming"),
    }


# `st.table` renders each cell as Markdown, so a message's text goes through `page_markdown`
# (images become links, never loaded; no server path; `$` is a price).


def next_call_table(context: list[Row], text: Text) -> pa.Table:
    """`core.stats.context_rows` as the dashboard's "exactly what the next call sends" table."""
    roles = _roles(text)
    states = {
        "sent": text("dashboard.next_call.sent"),
        "sent, pinned": text("dashboard.next_call.sent_pinned"),
        "dropped": text("dashboard.next_call.dropped"),
    }
    return pa.table(
        {
            text("dashboard.next_call.role"): [roles.get(row["role"], row["role"]) for row in context],
            text("dashboard.next_call.tokens"): pa.array([row["tokens"] for row in context], _INTEGER),
            text("dashboard.next_call.state"): [
                states.get(row["next call"], row["next call"]) for row in context
            ],
            text("dashboard.next_call.text"): [page_markdown(row["text"]) for row in context],
        }
    )


def trim_log_table(
    trims: list[Row], dropped: tuple[tuple[tuple[str, str], ...], ...], text: Text
) -> pa.Table:
    """The trimming log: each trim (`core.stats.trim_rows`) with the whole text it dropped."""
    roles = _roles(text)
    return pa.table(
        {
            text("dashboard.trims.turn"): pa.array([row["turn"] for row in trims], _INTEGER),
            text("dashboard.trims.dropped"): pa.array([row["messages_dropped"] for row in trims], _INTEGER),
            text("dashboard.trims.before"): [f"{row['tokens_before']:,}" for row in trims],
            text("dashboard.trims.after"): [f"{row['tokens_after']:,}" for row in trims],
            text("dashboard.trims.text"): [
                page_markdown(
                    "\n\n".join(f"{roles.get(role, role)}: {content}" for role, content in messages)
                )
                for messages in dropped
            ],
        }
    )


def _table(rows: list[Row], columns: list[str]) -> pa.Table:
    """`columns` of `rows` as an Arrow table (what `st.dataframe` sends; it has no index)."""
    return pa.Table.from_pylist(rows, schema=pa.schema([(column, _TYPES[column]) for column in columns]))


def _arrow(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream, the bytes Streamlit sends a chart's data in."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@dataclass(frozen=True)
class ComparisonChartTexts:
    """The comparison chart's words, in the page's language."""

    message: str = "message"
    prompt_tokens: str = "prompt tokens"
    reply_tokens: str = "reply tokens"
    first_token_s: str = "first token (s)"
    total_s: str = "total (s)"
    cost_usd: str = "cost (USD)"
    budget: str = "budget"
    title: str = "Per message, by column"


def comparison_spec(snapshot: ComparisonSnapshot, texts: ComparisonChartTexts | None = None) -> Spec | None:
    """Per message, each column's prompt tokens (billed) as a line with points, and its budget as
    a dashed tick where it is near the data (a budget more than BUDGET_OFF_SCALE times the
    largest prompt is named above the plot instead, as in the usage chart); reply tokens, speed
    and cost in the tooltip. None before any answer, and while the labels are hidden: the sizes
    and costs would tell the columns apart before the vote. The legend lists one column per row
    under the plot, so long labels never overlap and fit a phone."""
    if snapshot.labels_hidden:
        return None
    texts = texts or ComparisonChartTexts()
    answered = [
        (view.label, run, run.prompt_tokens)
        for view in snapshot.columns
        for run in view.runs
        if run.prompt_tokens is not None and not run.running
    ]
    if not answered:
        return None
    rows = [
        {
            "round": run.round,
            "column": label,
            "prompt": prompt,
            "budget": run.context_budget,
            "reply": run.reply_tokens,
            "first_token_s": run.time_to_first_token_s,
            "total_s": run.total_s,
            "cost_usd": run.cost_usd,
        }
        for label, run, prompt in answered
    ]
    largest = max(prompt for _, _, prompt in answered)
    budgets = sorted({run.context_budget for _, run, _ in answered})
    off_scale = [budget for budget in budgets if budget > BUDGET_OFF_SCALE * largest]
    top = max([largest, *(budget for budget in budgets if budget not in off_scale)])
    legend = {"orient": "bottom", "title": None, "columns": 1, "labelLimit": 0}
    color = {
        "field": "column",
        "type": "nominal",
        "legend": legend,
        "scale": {"range": list(OKABE_ITO.values())},
    }
    x = {"field": "round", "type": "ordinal", "title": texts.message, "axis": {"labelAngle": 0}}
    y_scale = {"domain": [0, top]}
    tooltip = [
        {"field": "column", "type": "nominal", "title": " "},
        {"field": "prompt", "type": "quantitative", "title": texts.prompt_tokens, "format": ","},
        {"field": "reply", "type": "quantitative", "title": texts.reply_tokens, "format": ","},
        {"field": "first_token_s", "type": "quantitative", "title": texts.first_token_s, "format": ".2f"},
        {"field": "total_s", "type": "quantitative", "title": texts.total_s, "format": ".2f"},
        {"field": "cost_usd", "type": "quantitative", "title": texts.cost_usd, "format": ".5f"},
    ]
    layers: list[Spec] = [
        {
            "mark": {"type": "line", "point": {"filled": True, "size": 70}},
            "encoding": {
                "x": x,
                "y": {
                    "field": "prompt",
                    "type": "quantitative",
                    "title": texts.prompt_tokens,
                    "scale": y_scale,
                },
                "color": color,
                "tooltip": tooltip,
            },
        }
    ]
    if len(off_scale) < len(budgets):
        layers.append(
            {
                "transform": [{"filter": {"field": "budget", "lte": top}}],
                "mark": {"type": "tick", "strokeDash": BUDGET_DASH, "thickness": 2},
                "encoding": {
                    "x": x,
                    "y": {"field": "budget", "type": "quantitative", "scale": y_scale},
                    "color": color,
                    "tooltip": [
                        {"field": "column", "type": "nominal", "title": " "},
                        {"field": "budget", "type": "quantitative", "title": texts.budget, "format": ","},
                    ],
                },
            }
        )
    if off_scale:  # each column's far budget named (the columns' budgets differ)
        layers.append(budget_note(f"{texts.budget} {' · '.join(f'{budget:,}' for budget in off_scale)} ↑"))
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": texts.title,
        "data": {"name": "runs"},
        "layer": layers,
        "datasets": {"runs": rows},
    }


def replay_spec(result: ReplayComparison, text: Text) -> Spec:
    """Prompt tokens per turn as recorded and as replayed (two lines, told apart by colour and by
    dash), with the replay's budget as a dashed rule, or named above the plot when it is more
    than BUDGET_OFF_SCALE times the largest prompt (as the usage chart does: drawn, it would
    flatten the lines against zero)."""
    recorded, replayed = text("chart.replay.recorded"), text("chart.replay.what_if")
    rows = [
        {"turn": row.number, "run": run, "prompt tokens": turn.prompt_tokens}
        for row in result.turns
        for run, turn in ((recorded, row.recorded), (replayed, row.replayed))
    ]
    budget = result.scenario.budget
    runs = {"domain": [recorded, replayed], "range": [OKABE_ITO["blue"], OKABE_ITO["orange"]]}
    turn_title, tokens_title = text("chart.axis.turn"), text("chart.compare.prompt_tokens")
    layers: list[Spec] = [
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {
                    "field": "turn",
                    "type": "quantitative",
                    "title": turn_title,
                    "axis": {"tickMinStep": 1, "format": "d"},
                },
                "y": {"field": "prompt tokens", "type": "quantitative", "title": tokens_title},
                "color": {
                    "field": "run",
                    "type": "nominal",
                    "scale": runs,
                    "legend": {"orient": "bottom", "title": None},
                },
                "strokeDash": {
                    "field": "run",
                    "type": "nominal",
                    "scale": {"domain": runs["domain"], "range": [[1, 0], [6, 3]]},
                    "legend": None,
                },
                "tooltip": [
                    {"field": "turn", "type": "quantitative", "title": turn_title},
                    {"field": "run", "type": "nominal", "title": text("chart.replay.run")},
                    {"field": "prompt tokens", "type": "quantitative", "format": ",", "title": tokens_title},
                ],
            },
        }
    ]
    largest = max(
        (turn.prompt_tokens for row in result.turns for turn in (row.recorded, row.replayed)), default=0
    )
    if budget is not None and budget > BUDGET_OFF_SCALE * largest:
        layers.append(budget_note(text("chart.budget_off_scale", budget=budget)))
    elif budget is not None:
        layers.append(
            {
                "mark": {"type": "rule", "strokeDash": [2, 2], "color": "#D55E00"},
                "encoding": {"y": {"datum": budget, "type": "quantitative"}},
            }
        )
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"name": "replay"},
        "layer": layers,
        "datasets": {"replay": rows},
    }


def leaderboard_spec(
    board: Leaderboard,
    *,
    rating_title: str,
    interval_title: str,
    votes_title: str,
    label: Callable[[Contestant], str] = operator.attrgetter("label"),
) -> Spec:
    """Each contestant's rating as a point on its 95% interval (a rule), best at the top; the
    axis and tooltip titles, and each contestant's `label`, are the page's, in its language."""
    rows = [
        {
            "contestant": label(row.contestant),
            "rating": round(row.rating, 1),
            "lower": round(row.lower, 1),
            "upper": round(row.upper, 1),
            "votes": row.votes,
        }
        for row in board.ratings
    ]
    y = {"field": "contestant", "type": "nominal", "sort": None, "title": None, "axis": {"labelLimit": 220}}
    tooltip = [
        {"field": "contestant", "type": "nominal"},
        {"field": "rating", "type": "quantitative", "title": rating_title},
        {"field": "lower", "type": "quantitative", "title": f"{interval_title} −"},
        {"field": "upper", "type": "quantitative", "title": f"{interval_title} +"},
        {"field": "votes", "type": "quantitative", "title": votes_title},
    ]
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"name": "ratings"},
        "encoding": {"y": y, "tooltip": tooltip},
        "layer": [
            {
                "mark": {"type": "rule", "strokeWidth": 2, "color": OKABE_ITO["sky"]},
                "encoding": {
                    "x": {
                        "field": "lower",
                        "type": "quantitative",
                        "scale": {"zero": False},
                        "title": rating_title,
                    },
                    "x2": {"field": "upper"},
                },
            },
            {
                "mark": {"type": "point", "filled": True, "size": 80, "color": OKABE_ITO["blue"]},
                "encoding": {"x": {"field": "rating", "type": "quantitative"}},
            },
        ],
        "datasets": {"ratings": rows},
    }


#: Axis, legend and title text in the light theme. Streamlit draws them in its gray70 (#808495,
#: 3.72:1 on white, under WCAG's 4.5:1); this grey is 6.1:1. Its dark theme's grey passes as it is.
LIGHT_THEME_CHART_TEXT = "#5e6170"


def in_theme(spec: Spec, theme: str | None) -> Spec:
    """`spec` with its text readable in the page's theme ("light", "dark", or None when the
    browser has not said: Streamlit's default theme is light)."""
    if theme == "dark":
        return spec
    colour = LIGHT_THEME_CHART_TEXT
    text = {"labelColor": colour, "titleColor": colour}
    title = {"color": colour, "subtitleColor": colour}
    config = {"axis": text, "legend": text, "header": text, "title": title}
    return {**spec, "config": {**spec.get("config", {}), **config}}
