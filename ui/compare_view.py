"""Side by side: one question to 2-4 personas or models at once, each column streaming on its own
thread (core/compare.py), with what each column saw, its tokens, speed and cost.

The page only draws snapshots: while columns stream it polls `Comparison.wait_for_change` and
redraws the live parts at most every POLL_S; a click (stop one column, for instance) reruns the
page, which picks up the same running comparison from the session state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core.backends import ChatBackend
from core.charts import comparison_spec
from core.compare import Column, ColumnView, Comparison, RunFigures, Tally
from core.conversation import MessageState
from core.errors import DashboardError
from core.personas import Persona
from core.safe_markdown import page_markdown
from core.workspace import Workspace

POLL_S = 0.1
STATE = "comparison"  # the open Comparison, in st.session_state
SAVED_ID = "comparison_id"  # its id in the store, once saved


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


def setup(personas: dict[str, Persona], workspace: Workspace, backend: ChatBackend) -> None:
    st.subheader("Compare")
    st.caption(
        "Send one message to 2 to 4 personas or models at once and see, column by column, what each "
        "model saw, its tokens, speed and cost."
    )
    count = int(st.number_input("Columns", min_value=2, max_value=4, value=3, key="compare_count"))
    ids = list(personas)
    columns = st.columns(count)
    chosen: list[tuple[str, str, int]] = []
    for index, column in enumerate(columns):
        with column:
            default = ids[index % len(ids)]
            persona_id = st.selectbox(
                f"Column {index + 1}",
                ids,
                index=ids.index(default),
                format_func=lambda pid: f"{personas[pid].avatar} {personas[pid].name}",
                key=f"compare_persona::{index}",
            )
            persona = personas[persona_id]
            model = st.text_input("Model", value=persona.model, key=f"compare_model::{index}::{persona_id}")
            budget = st.number_input(
                "Context budget",
                min_value=64,
                value=persona.context_budget,
                step=64,
                key=f"compare_budget::{index}::{persona_id}",
            )
            chosen.append((persona_id, model.strip() or persona.model, int(budget)))
    blind = st.toggle("Blind: hide which column is which until I pick the answer I prefer", key="blind")
    if st.button("Start comparing", type="primary", icon="⚖️"):
        try:
            built = [
                Column.start(
                    personas[pid],
                    backend,
                    label=f"{personas[pid].avatar} {personas[pid].name} · {model}",
                    model=model,
                    context_budget=budget,
                )
                for pid, model, budget in chosen
            ]
            st.session_state[STATE] = Comparison(built, blind=blind)
        except (DashboardError, ValueError) as error:
            st.error(page_markdown(f"The comparison cannot start: {error}"))
            return
        st.session_state.pop(SAVED_ID, None)
        st.rerun()
    saved_list(workspace, backend)


def saved_list(workspace: Workspace, backend: ChatBackend) -> None:
    try:
        saved = workspace.list_comparisons()
    except DashboardError as error:
        st.error(page_markdown(f"Saved comparisons cannot be read: {error}"))
        return
    if not saved:
        return
    st.markdown("**Saved comparisons**")
    for comparison_id, title in saved:
        st.button(
            page_markdown(title),
            key=f"open_comparison::{comparison_id}",
            on_click=open_saved,
            args=(workspace, comparison_id, backend),
        )
    tally = Tally(owner=workspace.owner)
    for pick in workspace.comparison_picks():
        tally.record(pick)
    standings = tally.standings("persona")
    if standings:
        st.markdown("**Blind picks so far**")
        st.dataframe(
            [
                {"persona": s.name, "wins": s.wins, "rounds": s.rounds, "win rate": f"{s.win_rate:.0%}"}
                for s in standings
            ],
            hide_index=True,
        )


def open_saved(workspace: Workspace, comparison_id: str, backend: ChatBackend) -> None:
    try:
        st.session_state[STATE] = workspace.load_comparison(comparison_id, backend)
        st.session_state[SAVED_ID] = comparison_id
    except DashboardError as error:
        st.session_state.notice = ("error", f"That comparison cannot be opened: {error}")


def close() -> None:
    comparison: Comparison | None = st.session_state.get(STATE)
    if comparison is not None:
        comparison.stop_all()
    st.session_state.pop(STATE, None)
    st.session_state.pop(SAVED_ID, None)


def save(workspace: Workspace, comparison: Comparison) -> None:
    try:
        st.session_state[SAVED_ID] = workspace.save_comparison(st.session_state.get(SAVED_ID), comparison)
    except DashboardError as error:
        st.session_state.store_error = f"The comparison is not saved yet: {error}"


def act(action: Callable[[], Any]) -> None:
    """A button's callback: do it, or show why not."""
    try:
        action()
    except DashboardError as error:
        st.session_state.notice = ("error", str(error))


def draw_column(view: ColumnView, comparison: Comparison) -> Callable[[ColumnView], None]:
    """Draw one column's history and controls; returns the function that redraws its live part."""
    st.markdown(page_markdown(f"**{view.label}**"))
    if not view.hidden and view.model:
        st.caption(page_markdown(f"`{view.model}` · budget {view.context_budget:,}"))
    for message in view.messages[1:]:  # the system prompt would tell a hidden column's persona
        if message.state is not MessageState.CONTEXT:
            continue
        with st.chat_message(message.role):
            st.markdown(page_markdown(message.content))
    live = st.empty()
    buttons = st.container()
    with buttons:
        if view.running:
            st.button(
                "Stop",
                key=f"stop_column::{view.index}",
                on_click=act,
                args=(lambda: comparison.stop(view.index),),
            )
        elif view.can_retry:
            st.button(
                "Retry",
                key=f"retry_column::{view.index}",
                on_click=act,
                args=(lambda: comparison.retry(view.index),),
            )

    def redraw(current: ColumnView) -> None:
        with live.container():
            if current.running or current.state in ("stopped", "failed"):
                with st.chat_message("assistant"):
                    st.markdown(page_markdown(current.text or "…"))
            if (
                current.state == "failed"
                and current.figures is not None
                and current.figures.error is not None
            ):
                st.error(page_markdown(current.figures.error.message))
            state = {"waiting": "⏳ waiting", "streaming": "✍️ streaming", "stopped": "⏹ stopped"}.get(
                current.state
            )
            line = figures_line(current.figures)
            st.caption(" · ".join(part for part in (state, line) if part))

    redraw(view)
    return redraw


def comparison_view(workspace: Workspace) -> None:
    comparison: Comparison = st.session_state[STATE]
    snapshot = comparison.snapshot()
    top = st.columns([2, 1, 1, 1])
    top[0].subheader("Compare")
    top[1].button("New comparison", on_click=close, disabled=snapshot.busy)
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
    prompt = st.chat_input("Ask every column…", key="compare_input", disabled=snapshot.busy)
    if prompt and not snapshot.busy:
        try:
            comparison.send(prompt)
        except DashboardError as error:
            st.error(page_markdown(str(error)))
        snapshot = comparison.snapshot()
    redraws = []
    for column, view in zip(st.columns(len(snapshot.columns)), snapshot.columns, strict=True):
        with column:
            redraws.append(draw_column(view, comparison))
    while snapshot.busy:
        comparison.wait_for_change(snapshot.version, timeout=POLL_S)
        snapshot = comparison.snapshot()
        for redraw, view in zip(redraws, snapshot.columns, strict=True):
            redraw(view)
    if snapshot.rounds:
        if prompt or st.session_state.get(SAVED_ID) is None:
            save(workspace, comparison)
            if prompt:
                st.rerun()  # draw the recorded answers as history
        chart = comparison_spec(snapshot)
        if chart is not None:
            st.markdown("**Per message, by column**")
            st.vega_lite_chart(spec=chart, width="stretch", height=260)
    if snapshot.blind and snapshot.can_pick:
        st.markdown("**Which answer do you prefer?**")
        picks = st.columns(len(snapshot.columns))
        for index, view in enumerate(snapshot.columns):
            picks[index].button(
                page_markdown(f"Prefer {view.label}"),
                key=f"pick::{index}",
                on_click=pick,
                args=(workspace, comparison, index),
            )
    if snapshot.picks:
        last = snapshot.picks[-1]
        st.caption(page_markdown(f"You preferred {last.label} on message {last.round}."))


def pick(workspace: Workspace, comparison: Comparison, index: int) -> None:
    act(lambda: comparison.pick(index))
    save(workspace, comparison)
