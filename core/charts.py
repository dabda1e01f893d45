"""Altair charts of a conversation's record (Altair ships with Streamlit)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from core.stats import ContextGauge

# turns_frame column -> (legend name, colour); every layer below filters on these names.
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


def usage_chart(turns: pd.DataFrame, trims: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """Per-turn prompt tokens (counted vs reported), reply tokens and the budget, with trims marked."""
    long = turns.melt(
        id_vars=["turn"], value_vars=list(SERIES), var_name="series", value_name="tokens"
    ).dropna(subset=["tokens"])
    long["series"] = long["series"].map({column: name for column, (name, _) in SERIES.items()})
    long["tokens"] = long["tokens"].astype(int)
    color = alt.Color(
        "series:N",
        scale=alt.Scale(domain=[name for name, _ in SERIES.values()], range=[c for _, c in SERIES.values()]),
        legend=alt.Legend(orient="bottom", title=None, columns=2, labelLimit=0),
    )
    # Half a turn of room either side, so the first and last bars are drawn whole.
    last_turn = int(turns["turn"].max()) if len(turns) else 1
    turn_scale = alt.Scale(domain=[0.5, last_turn + 0.5], nice=False)
    x = alt.X("turn:Q", title="turn", scale=turn_scale, axis=alt.Axis(tickMinStep=1, format="d"))
    base = alt.Chart(long).encode(
        x=x,
        y=alt.Y("tokens:Q", title="tokens"),
        color=color,
        tooltip=[alt.Tooltip("turn:Q"), alt.Tooltip("series:N"), alt.Tooltip("tokens:Q", format=",")],
    )

    def only(*columns: str) -> alt.FieldOneOfPredicate:
        return alt.FieldOneOfPredicate(field="series", oneOf=[SERIES[c][0] for c in columns])

    bars = base.transform_filter(only("reply_tokens")).mark_bar(opacity=0.5, width=8)
    # The budget as one dashed segment per turn: visible from the first turn, and steps where
    # the user changed it.
    budget = (
        base.transform_filter(only("context_budget"))
        .transform_calculate(start="datum.turn - 0.5", end="datum.turn + 0.5")
        .mark_rule(strokeDash=[6, 4], strokeWidth=2)
        .encode(x=alt.X("start:Q", title="turn", scale=turn_scale), x2="end:Q")
    )
    # Counted as a line, reported as hollow circles: where they agree, the circles sit on the line.
    counted = base.transform_filter(only("counted_prompt_tokens")).mark_line()
    reported = base.transform_filter(only("reported_prompt_tokens")).mark_point(size=70, filled=False)
    trim_marks = (
        alt.Chart(trims)
        .mark_point(shape="triangle-down", size=160, filled=True, color="#d62728")
        .encode(
            x=x,
            y=alt.Y("tokens_before:Q"),
            tooltip=[
                alt.Tooltip("turn:Q", title="trimmed before turn"),
                alt.Tooltip("messages_dropped:Q", title="messages dropped"),
                alt.Tooltip("tokens_freed:Q", title="tokens freed", format=","),
                alt.Tooltip("tokens_before:Q", title="tokens before", format=","),
                alt.Tooltip("tokens_after:Q", title="tokens after", format=","),
                alt.Tooltip("preview:N", title="dropped"),
            ],
        )
    )
    return alt.layer(bars, budget, counted, reported, trim_marks).properties(height=240)


def gauge_chart(gauge: ContextGauge) -> alt.Chart:
    """One stacked bar: what fills the context budget now."""
    frame = gauge.frame()
    frame["order"] = range(len(frame))
    chart: alt.Chart = (
        alt.Chart(frame)
        .mark_bar(height=24)
        .encode(
            x=alt.X("sum(tokens):Q", title=f"tokens of the {gauge.budget:,}-token budget", stack="zero"),
            color=alt.Color(
                "part:N",
                scale=alt.Scale(domain=list(GAUGE_COLORS), range=list(GAUGE_COLORS.values())),
                legend=None,  # the page names the parts in a caption under the bar
            ),
            order=alt.Order("order:Q"),
            tooltip=[alt.Tooltip("part:N"), alt.Tooltip("tokens:Q", format=",")],
        )
        .properties(height=28)
    )
    return chart
