"""Side by side: one question to 2-4 personas or models at once, each column streaming on its own
thread (core/compare.py), with what each column saw, its tokens, speed and cost.

The page only draws snapshots: while columns stream it polls `Comparison.wait_for_change` and
redraws the live parts at most every POLL_S; a click (stop one column, for instance) reruns the
page, which picks up the same running comparison from the visitor's service. Every start, send,
retry, stop and pick goes through the service, which holds them to the deployer's limits. The
open comparison's id is in the link (`?cmp=`), so a reload returns to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from core.charts import ComparisonChartTexts, comparison_spec
from core.compare import ColumnView, Comparison, RunFigures
from core.conversation import MessageState
from core.errors import DashboardError
from core.i18n import current
from core.notices import error_notice
from core.personas import Persona
from core.service import ColumnChoice, VisitorService
from core.settings import MAX_CONTEXT_BUDGET
from ui.frame import Frame
from ui.leaderboard_view import leaderboard_section
from ui.state import Key, compare_key
from ui.text import as_markdown, error_text

POLL_S = 0.1
#: The query parameter naming the open (saved) comparison.
COMPARISON_PARAM = "cmp"


def page(frame: Frame) -> None:
    service = frame.service
    wanted = st.query_params.get(COMPARISON_PARAM)
    if wanted and service.comparison_id != wanted:
        service.open_comparison(wanted)
    if service.comparison is not None:
        comparison_view(service, service.comparison)
    else:
        if COMPARISON_PARAM in st.query_params:
            del st.query_params[COMPARISON_PARAM]
        setup(service, frame.catalog.personas)


def chart_texts() -> ComparisonChartTexts:
    tr = current(st.session_state)
    return ComparisonChartTexts(
        **{name: tr(f"chart.compare.{name}") for name in ComparisonChartTexts.__dataclass_fields__}
    )


def figures_line(figures: RunFigures | None) -> str:
    """Tokens, speed and cost of one answer, in one line."""
    if figures is None:
        return ""
    parts = []
    if figures.prompt_tokens_counted is not None:
        reported = figures.prompt_tokens_reported
        api = f" (API {reported:,})" if reported is not None else ""
        parts.append(f"prompt {figures.prompt_tokens_counted:,}{api}")
    if figures.reply_tokens is not None:
        parts.append(f"reply {figures.reply_tokens:,}")
    if figures.time_to_first_token_s is not None:
        parts.append(f"first token {figures.time_to_first_token_s:.2f} s")
    if figures.total_s is not None:
        parts.append(f"total {figures.total_s:.2f} s")
    if figures.cost_usd is not None:
        parts.append(f"${figures.cost_usd:.5f}")
    if figures.trimmed_messages:
        parts.append(f"trimmed {figures.trimmed_messages} ({figures.tokens_freed:,} tokens)")
    return " · ".join(parts)


def setup(service: VisitorService, personas: dict[str, Persona]) -> None:
    st.subheader("Compare")
    st.caption(
        "Send one message to 2 to 4 personas or models at once and see, column by column, what each "
        "model saw, its tokens, speed and cost."
    )
    count = int(st.number_input("Columns", min_value=2, max_value=4, value=3, key=Key.COMPARE_COUNT))
    ids = list(personas)
    columns = st.columns(count)
    limits = service.limits
    max_budget = limits.max_context_budget if limits else MAX_CONTEXT_BUDGET
    chosen: list[ColumnChoice] = []
    for index, column in enumerate(columns):
        with column:
            default = ids[index % len(ids)]
            persona_id = st.selectbox(
                f"Column {index + 1}",
                ids,
                index=ids.index(default),
                format_func=lambda pid: f"{personas[pid].avatar} {personas[pid].name}",
                key=compare_key("persona", index),
            )
            persona = personas[persona_id]
            model_key = compare_key("model", index, persona_id)
            if limits is not None and limits.allowed_models:  # on the deployer's key: its models
                models = list(limits.allowed_models)
                first = models.index(persona.model) if persona.model in models else 0
                model = st.selectbox("Model", models, index=first, key=model_key)
            else:
                model = st.text_input("Model", value=persona.model, key=model_key)
            budget = st.number_input(
                "Context budget",
                min_value=64,
                max_value=max_budget,
                value=min(persona.context_budget, max_budget),
                step=64,
                key=compare_key("budget", index, persona_id),
            )
            chosen.append(ColumnChoice(persona_id, model.strip() or persona.model, int(budget)))
    blind = st.toggle(
        "Blind: hide which column is which until I pick the answer I prefer", key=Key.COMPARE_BLIND
    )
    started = st.button("Start comparing", type="primary", icon="⚖️")
    if started and service.start_comparison(personas, chosen, blind=blind) is not None:
        st.rerun()
    saved_list(service)


def saved_list(service: VisitorService) -> None:
    try:
        saved = service.saved_comparisons()
    except DashboardError as error:
        st.error(as_markdown(f"Saved comparisons cannot be read: {error}"))
        return
    if not saved:
        return
    st.markdown("**Saved comparisons**")
    for comparison_id, title in saved:
        st.button(
            as_markdown(title),
            key=f"open_comparison::{comparison_id}",
            on_click=open_saved,
            args=(service, comparison_id),
        )
    leaderboard_section(service.leaderboard_picks())


def open_saved(service: VisitorService, comparison_id: str) -> None:
    if service.open_comparison(comparison_id) is not None:
        st.query_params[COMPARISON_PARAM] = comparison_id


def close(service: VisitorService) -> None:
    service.close_comparison()
    if COMPARISON_PARAM in st.query_params:
        del st.query_params[COMPARISON_PARAM]


def act(service: VisitorService, action: Callable[[], Any]) -> None:
    """A button's callback: do it, or show why not."""
    try:
        action()
    except DashboardError as error:
        service.notify(error_notice("compare_refused", error))


def draw_column(view: ColumnView, service: VisitorService) -> Callable[[ColumnView], None]:
    """Draw one column's history and controls; returns the function that redraws its live part."""
    st.markdown(as_markdown(f"**{view.label}**"))
    if not view.hidden and view.model:
        st.caption(as_markdown(f"`{view.model}` · budget {view.context_budget:,}"))
    for message in view.messages[1:]:  # the system prompt would tell a hidden column's persona
        if message.state is not MessageState.CONTEXT:
            continue
        with st.chat_message(message.role):
            st.markdown(as_markdown(message.content))
    live = st.empty()
    buttons = st.container()
    with buttons:
        if view.running:
            st.button(
                "Stop",
                key=f"stop_column::{view.index}",
                on_click=act,
                args=(service, lambda: service.compare_stop(view.index)),
            )
        elif view.can_retry:
            st.button(
                "Retry",
                key=f"retry_column::{view.index}",
                on_click=act,
                args=(service, lambda: service.compare_retry(view.index)),
            )

    def redraw(current: ColumnView) -> None:
        with live.container():
            if current.running or current.state in ("stopped", "failed"):
                with st.chat_message("assistant"):
                    st.markdown(as_markdown(current.text or "…"))
            if (
                current.state == "failed"
                and current.figures is not None
                and current.figures.error is not None
            ):
                st.error(as_markdown(current.figures.error.message))
            state = {"waiting": "⏳ waiting", "streaming": "✍️ streaming", "stopped": "⏹ stopped"}.get(
                current.state
            )
            line = figures_line(current.figures)
            st.caption(" · ".join(part for part in (state, line) if part))

    redraw(view)
    return redraw


def comparison_view(service: VisitorService, comparison: Comparison) -> None:
    snapshot = comparison.snapshot()
    top = st.columns([2, 1, 1, 1])
    top[0].subheader("Compare")
    top[1].button("New comparison", on_click=close, args=(service,), disabled=snapshot.busy)
    if not snapshot.busy and snapshot.rounds:
        top[2].download_button(
            "JSON",
            comparison.to_json(),
            file_name="comparison.json",
            mime="application/json",
            on_click="ignore",
        )
        top[3].download_button(
            "Markdown",
            comparison.to_markdown("Comparison"),
            file_name="comparison.md",
            mime="text/markdown",
            on_click="ignore",
        )
    limits = service.limits
    prompt = st.chat_input(
        "Ask every column…",
        key=Key.COMPARE_INPUT,
        disabled=snapshot.busy,
        max_chars=limits.max_message_chars if limits else None,
    )
    sent = False
    if prompt and not snapshot.busy:
        try:
            service.compare_send(prompt)
            sent = True
        except DashboardError as error:
            st.error(error_text(error))
        snapshot = comparison.snapshot()
    redraws = []
    for column, view in zip(st.columns(len(snapshot.columns)), snapshot.columns, strict=True):
        with column:
            redraws.append(draw_column(view, service))
    try:
        while snapshot.busy:
            comparison.wait_for_change(snapshot.version, timeout=POLL_S)
            snapshot = comparison.snapshot()
            for redraw, view in zip(redraws, snapshot.columns, strict=True):
                redraw(view)
    except StopException:
        # The tab closed (or the run was stopped): the columns' threads would run on for nobody,
        # holding their replies in memory; they stop and keep what arrived.
        comparison.stop_all()
        raise
    if snapshot.rounds:
        if sent or service.comparison_id is None:
            service.save_comparison()
            if service.comparison_id is not None:
                st.query_params[COMPARISON_PARAM] = service.comparison_id
            if sent:
                st.rerun()  # draw the recorded answers as history
        chart = comparison_spec(snapshot, chart_texts())
        if chart is not None:
            st.markdown("**Per message, by column**")
            st.vega_lite_chart(spec=chart, width="stretch", height=260)
    if snapshot.blind and snapshot.can_pick:
        st.markdown("**Which answer do you prefer?**")
        picks = st.columns(len(snapshot.columns))
        for index, view in enumerate(snapshot.columns):
            picks[index].button(
                as_markdown(f"Prefer {view.label}"),
                key=f"pick::{index}",
                on_click=act,
                args=(service, functools.partial(service.compare_pick, index)),
            )
    if snapshot.picks:
        last = snapshot.picks[-1]
        st.caption(as_markdown(f"You preferred {last.label} on message {last.round}."))
