"""The dashboard's charts as plain Vega-Lite specs (dicts), built once per recorded change.

Not Altair objects: Altair checks a chart against the Vega-Lite JSON schema every time it turns
it into a spec, and on a page that reruns its script on every interaction that check was most of
a rerun. These dicts are checked against the same schema once, in the tests
(tests/test_stats.py), and `dashboard_drawing` builds them, and the dashboard's tables, once per
version of the figures, with their data already in Arrow, the form Streamlit sends to the
browser: an unchanged conversation costs no chart or table work.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]  # ships with Streamlit, untyped

from core.stats import CONTEXT_COLUMNS, TURN_COLUMNS, ContextGauge, DashboardFigures, Row

if TYPE_CHECKING:
    from core.compare import ComparisonSnapshot
    from core.replay import Comparison as ReplayComparison

Spec = dict[str, Any]

#: The Vega-Lite major version Streamlit's frontend draws with.
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"

# turn_rows column -> (legend name, colour); every layer below filters on these names.
SERIES = {
    "counted_prompt_tokens": ("prompt, counted", "#1f77b4"),
    "reported_prompt_tokens": ("prompt, API", "#ff7f0e"),
    "reply_tokens": ("reply", "#2ca02c"),
    "context_budget": ("budget", "#d62728"),
}
GAUGE_COLORS = {
    "system": "#6c5ce7",
    "pinned": "#fdcb6e",
    "history": "#74b9ff",
    "newest": "#00b894",
    "priming": "#b2bec3",
    "free": "#e9e9e9",
}
TRIM_TOOLTIP = (
    ("turn", "quantitative", "trimmed before turn", None),
    ("messages_dropped", "quantitative", "messages dropped", None),
    ("tokens_freed", "quantitative", "tokens freed", ","),
    ("tokens_before", "quantitative", "tokens before", ","),
    ("tokens_after", "quantitative", "tokens after", ","),
    ("preview", "nominal", "dropped", None),
)


def usage_series(turns: list[Row]) -> list[Row]:
    """The per-turn rows (`core.stats.turn_rows`) in long form, one row per (turn, series) that
    has a value."""
    return [
        {"turn": row["turn"], "series": name, "tokens": row[column]}
        for column, (name, _) in SERIES.items()
        for row in turns
        if row[column] is not None
    ]


def usage_spec(turns: list[Row], trims: list[Row]) -> Spec:
    """Per-turn prompt tokens (counted vs reported), reply tokens and the budget, with trims marked
    (from `core.stats.turn_rows` and `trim_rows`)."""
    # Half a turn of room either side, so the first and last bars are drawn whole.
    last_turn = max((row["turn"] for row in turns), default=1)
    turn_scale = {"domain": [0.5, last_turn + 0.5], "nice": False}
    x = {
        "field": "turn",
        "type": "quantitative",
        "title": "turn",
        "scale": turn_scale,
        "axis": {"tickMinStep": 1, "format": "d"},
    }
    shared = {
        "x": x,
        "y": {"field": "tokens", "type": "quantitative", "title": "tokens"},
        "color": {
            "field": "series",
            "type": "nominal",
            "scale": {
                "domain": [name for name, _ in SERIES.values()],
                "range": [color for _, color in SERIES.values()],
            },
            "legend": {"orient": "bottom", "title": None, "columns": 2, "labelLimit": 0},
        },
        "tooltip": [
            {"field": "turn", "type": "quantitative"},
            {"field": "series", "type": "nominal"},
            {"field": "tokens", "type": "quantitative", "format": ","},
        ],
    }

    def series_layer(column: str, mark: Spec, **encoding: Any) -> Spec:
        return {
            "data": {"name": "usage"},
            "transform": [{"filter": {"field": "series", "oneOf": [SERIES[column][0]]}}],
            "mark": mark,
            "encoding": {**shared, **encoding},
        }

    bars = series_layer("reply_tokens", {"type": "bar", "opacity": 0.5, "width": 8})
    # The budget as one dashed segment per turn: visible from the first turn, and steps where
    # the user changed it.
    budget = series_layer(
        "context_budget",
        {"type": "rule", "strokeDash": [6, 4], "strokeWidth": 2},
        x={"field": "start", "type": "quantitative", "title": "turn", "scale": turn_scale},
        x2={"field": "end"},
    )
    budget["transform"] += [
        {"calculate": "datum.turn - 0.5", "as": "start"},
        {"calculate": "datum.turn + 0.5", "as": "end"},
    ]
    # Counted as a line, reported as hollow circles: where they agree, the circles sit on the line.
    counted = series_layer("counted_prompt_tokens", {"type": "line"})
    reported = series_layer("reported_prompt_tokens", {"type": "point", "size": 70, "filled": False})
    trim_marks = {
        "data": {"name": "trims"},
        "mark": {"type": "point", "shape": "triangle-down", "size": 160, "filled": True, "color": "#d62728"},
        "encoding": {
            "x": x,
            "y": {"field": "tokens_before", "type": "quantitative"},
            "tooltip": [
                {"field": field, "type": kind, "title": title, **({"format": fmt} if fmt else {})}
                for field, kind, title, fmt in TRIM_TOOLTIP
            ],
        },
    }
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "height": 240,
        "layer": [bars, budget, counted, reported, trim_marks],
        "datasets": {"usage": usage_series(turns), "trims": trims},
    }


def gauge_spec(gauge: ContextGauge) -> Spec:
    """One stacked bar: what fills the context budget now."""
    parts = [
        {"part": part, "tokens": tokens, "order": order} for order, (part, tokens) in enumerate(gauge.parts())
    ]
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "height": 28,
        "data": {"name": "gauge"},
        "mark": {"type": "bar", "height": 24},
        "encoding": {
            "x": {
                "aggregate": "sum",
                "field": "tokens",
                "type": "quantitative",
                "title": f"tokens of the {gauge.budget:,}-token budget",
                "stack": "zero",
            },
            "color": {
                "field": "part",
                "type": "nominal",
                "scale": {"domain": list(GAUGE_COLORS), "range": list(GAUGE_COLORS.values())},
                "legend": None,  # the page names the parts in a caption under the bar
            },
            "order": {"field": "order", "type": "quantitative"},
            "tooltip": [
                {"field": "part", "type": "nominal"},
                {"field": "tokens", "type": "quantitative", "format": ","},
            ],
        },
        "datasets": {"gauge": parts},
    }


def for_streamlit(spec: Spec) -> Spec:
    """`spec` with its named datasets as Arrow IPC bytes, the form `st.vega_lite_chart` sends to
    the browser: serialized here once, instead of by Streamlit on every rerun."""
    datasets = {name: _arrow(pa.Table.from_pylist(rows)) for name, rows in spec.get("datasets", {}).items()}
    return {**spec, "datasets": datasets}


_INTEGER, _TEXT = pa.int64(), pa.string()
# The dashboard's tables' columns and their Arrow types, so that an empty table keeps its columns.
_TYPES = {
    # core.stats.TURN_COLUMNS
    "turn": _INTEGER,
    "counted_prompt_tokens": _INTEGER,
    "reported_prompt_tokens": _INTEGER,
    "difference": _INTEGER,
    "reply_tokens": _INTEGER,
    "context_budget": _INTEGER,
    "messages_sent": _INTEGER,
    "latency_s": pa.float64(),
    "interrupted": pa.bool_(),
    # core.stats.TRIM_COLUMNS
    "messages_dropped": _INTEGER,
    "tokens_before": _INTEGER,
    "tokens_after": _INTEGER,
    "preview": _TEXT,
    # core.stats.CONTEXT_COLUMNS
    "role": _TEXT,
    "tokens": _INTEGER,
    "next call": _TEXT,
    "text": _TEXT,
}
#: The columns of the per-turn rows the mismatch table shows.
MISMATCH_COLUMNS = ["turn", "counted_prompt_tokens", "reported_prompt_tokens", "difference"]
#: The columns of the trim rows the trimming log shows.
TRIM_LOG_COLUMNS = ["turn", "messages_dropped", "tokens_before", "tokens_after", "preview"]


@dataclass(frozen=True)
class DashboardDrawing:
    """What the dashboard hands Streamlit, in the form Streamlit sends it to the browser: chart
    specs with Arrow data, and tables as Arrow tables (which `st.dataframe` sends as they are,
    where a pandas frame is converted again on every rerun)."""

    #: None until the first turn is recorded.
    usage: Spec | None
    gauge: Spec
    #: What the next call sends (`core.stats.context_rows`).
    context: pa.Table
    #: The trimming log.
    trims: pa.Table
    #: Every turn (`core.stats.turn_rows`).
    turns: pa.Table
    #: The turns whose counted and reported prompt tokens differ.
    mismatched: pa.Table


_drawings: weakref.WeakKeyDictionary[DashboardFigures, DashboardDrawing] = weakref.WeakKeyDictionary()


def dashboard_drawing(figures: DashboardFigures) -> DashboardDrawing:
    """The charts and tables of `figures`, built once per figures object (which
    `core.stats.dashboard_figures` builds once per version of a conversation)."""
    drawing = _drawings.get(figures)
    if drawing is None:
        turns, trims = figures.turns, figures.trims
        drawing = _drawings[figures] = DashboardDrawing(
            usage=for_streamlit(usage_spec(turns, trims)) if turns else None,
            gauge=for_streamlit(gauge_spec(figures.gauge)),
            context=_table(figures.context, CONTEXT_COLUMNS),
            trims=_table(trims, TRIM_LOG_COLUMNS),
            turns=_table(turns, TURN_COLUMNS),
            mismatched=_table(figures.mismatched, MISMATCH_COLUMNS),
        )
    return drawing


def _table(rows: list[Row], columns: list[str]) -> pa.Table:
    """`columns` of `rows` as an Arrow table (what `st.dataframe` sends; it has no index)."""
    return pa.Table.from_pylist(rows, schema=pa.schema([(column, _TYPES[column]) for column in columns]))


def _arrow(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream, the bytes Streamlit sends a chart's data in."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def comparison_spec(snapshot: ComparisonSnapshot) -> Spec | None:
    """Per message, each column's prompt tokens (billed) with its budget as a dashed rule, and in
    the tooltip its reply tokens, speed and cost; None before any answer."""
    rows = [
        {
            "round": run.round,
            "column": view.label,
            "prompt tokens": run.prompt_tokens,
            "budget": run.context_budget,
            "reply tokens": run.reply_tokens,
            "first token s": run.time_to_first_token_s,
            "total s": run.total_s,
            "cost usd": run.cost_usd,
        }
        for view in snapshot.columns
        for run in view.runs
        if run.prompt_tokens is not None and not run.running
    ]
    if not rows:
        return None
    color = {"field": "column", "type": "nominal", "legend": {"orient": "bottom", "title": None}}
    x = {"field": "round", "type": "ordinal", "title": "message"}
    tooltip = [
        {"field": name, "type": "quantitative" if name not in ("column",) else "nominal"}
        for name in ("column", "prompt tokens", "reply tokens", "first token s", "total s", "cost usd")
    ]
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "data": {"name": "runs"},
        "layer": [
            {
                "mark": {"type": "line", "point": True},
                "encoding": {
                    "x": x,
                    "y": {"field": "prompt tokens", "type": "quantitative", "title": "prompt tokens"},
                    "color": color,
                    "shape": {"field": "column", "type": "nominal", "legend": None},
                    "tooltip": tooltip,
                },
            },
            {
                "mark": {"type": "tick", "strokeDash": [6, 4], "thickness": 2},
                "encoding": {"x": x, "y": {"field": "budget", "type": "quantitative"}, "color": color},
            },
        ],
        "datasets": {"runs": rows},
    }


def replay_spec(result: ReplayComparison) -> Spec:
    """Prompt tokens per turn as recorded and as replayed (two lines, told apart by colour and by
    dash), with the replay's budget as a dashed rule."""
    rows = [
        {"turn": row.number, "run": run, "prompt tokens": turn.prompt_tokens}
        for row in result.turns
        for run, turn in (("recorded", row.recorded), ("what if", row.replayed))
    ]
    budget = result.scenario.budget
    runs = {"domain": ["recorded", "what if"], "range": ["#0072B2", "#E69F00"]}
    layers: list[Spec] = [
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "turn", "type": "quantitative", "axis": {"tickMinStep": 1, "format": "d"}},
                "y": {"field": "prompt tokens", "type": "quantitative"},
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
                    {"field": "turn", "type": "quantitative"},
                    {"field": "run", "type": "nominal"},
                    {"field": "prompt tokens", "type": "quantitative", "format": ","},
                ],
            },
        }
    ]
    if budget is not None:
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
