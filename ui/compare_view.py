"""⚖️ Compare: one question to 2-4 personas or models at once, each column streaming on its own
thread (core/compare/comparison.py), with what each column saw, its tokens, speed and cost; a blind pair of
two anonymous columns; test sets (ui/testsets_view.py); and the leaderboard of the votes
(ui/leaderboard_view.py).

While columns stream, only the columns redraw: they are a fragment that reruns itself every
LIVE_S (no loop holds the script), each column showing its text as it arrives and its final
state, figures and buttons as soon as it ends; when the last column ends the page reruns once to
draw the chart and the vote. Every start, send, retry, stop and vote goes through the visitor's
service, which holds them to the deployer's limits and saves the comparison as it goes: the
question before the columns call the model, their answers so far at most every 2 s, each answer
as it ends. The comparison's id is in the link (`?cmp=`) from its first question, so a reload
(even after a crash) returns to it, each unfinished answer kept as interrupted, to retry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import streamlit as st

from core.charts import ComparisonChartTexts, comparison_spec
from core.chat.conversation import MessageState
from core.chat.settings import MAX_CONTEXT_BUDGET
from core.compare.comparison import ColumnView, Comparison, ComparisonSnapshot, RunFigures
from core.errors import DashboardError
from core.notices import error_notice
from core.personas.persona import Persona
from core.service import ColumnChoice, VisitorService
from ui import testsets_view
from ui.charts import vega_chart
from ui.frame import Frame
from ui.leaderboard_view import leaderboard_section
from ui.state import Key, compare_key
from ui.text import as_markdown, error_text, tr, tr_plural

#: How often the columns redraw while any streams (seconds).
LIVE_S = 0.25
#: The query parameter naming the open (saved) comparison.
COMPARISON_PARAM = "cmp"
#: What the setup offers, by key: `compare.mode.<key>` in core/locales.
MODES = ("columns", "blind", "tests")
#: A column's states its caption names (`compare.state.<state>`); the others show for themselves.
NAMED_STATES = ("waiting", "streaming", "stopped", "interrupted")
#: Comparisons listed under the chat page's conversation list.
RECENT_COMPARISONS = 5


def page(frame: Frame) -> None:
    service = frame.service
    wanted = st.query_params.get(COMPARISON_PARAM)
    if wanted and service.comparison_id != wanted:
        service.open_comparison(wanted)
    if service.comparison is not None:
        comparison_view(service, service.comparison)
        return
    if COMPARISON_PARAM in st.query_params:
        del st.query_params[COMPARISON_PARAM]
    personas = frame.catalog.personas
    st.subheader(tr("compare.header"))
    mode = st.segmented_control(
        tr("compare.mode.label"),
        MODES,
        format_func=lambda name: tr(f"compare.mode.{name}"),
        default="columns",
        key=Key.COMPARE_MODE,
        label_visibility="collapsed",
    )
    if mode == "blind":
        blind_pair_setup(service, personas)
    elif mode == "tests":
        testsets_view.test_sets(service, personas)
    else:
        columns_setup(service, personas)
    saved_list(service)
    leaderboard_section(service.picks_by_conversation())


def chart_texts() -> ComparisonChartTexts:
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
        api = tr("compare.figures.api", tokens=f"{reported:,}") if reported is not None else ""
        parts.append(tr("compare.figures.prompt", tokens=f"{figures.prompt_tokens_counted:,}") + api)
    if figures.reply_tokens is not None:
        parts.append(tr("compare.figures.reply", tokens=f"{figures.reply_tokens:,}"))
    if figures.time_to_first_token_s is not None:
        parts.append(tr("compare.figures.first_token", seconds=f"{figures.time_to_first_token_s:.2f}"))
    if figures.total_s is not None:
        parts.append(tr("compare.figures.total", seconds=f"{figures.total_s:.2f}"))
    if figures.cost_usd is not None:
        parts.append(f"${figures.cost_usd:.5f}")
    if figures.trimmed_messages:
        parts.append(
            tr(
                "compare.figures.trimmed",
                messages=figures.trimmed_messages,
                tokens=f"{figures.tokens_freed:,}",
            )
        )
    return " · ".join(parts)


# --- setup -------------------------------------------------------------------------------------


def column_choices(
    service: VisitorService, personas: dict[str, Persona], count: int, prefix: str
) -> list[ColumnChoice]:
    """`count` columns side by side, each a persona, a model (the deployer's choices on the
    deployer's key) and a budget (capped by the deployment); widget keys start with `prefix`."""
    ids = list(personas)
    limits = service.limits
    max_budget = limits.max_context_budget if limits else MAX_CONTEXT_BUDGET
    chosen: list[ColumnChoice] = []
    for index, column in enumerate(st.columns(count)):
        with column:
            persona_id = st.selectbox(
                tr("compare.column", number=index + 1),
                ids,
                index=index % len(ids),
                format_func=lambda pid: f"{personas[pid].avatar} {personas[pid].name}",
                key=compare_key(f"{prefix}persona", index),
            )
            persona = personas[persona_id]
            model_key = compare_key(f"{prefix}model", index, persona_id)
            if limits is not None and limits.allowed_models:
                models = list(limits.allowed_models)
                first = models.index(persona.model) if persona.model in models else 0
                model = st.selectbox(tr("compare.model"), models, index=first, key=model_key)
            else:
                model = st.text_input(tr("compare.model"), value=persona.model, key=model_key, max_chars=200)
            budget = st.number_input(
                tr("compare.budget"),
                min_value=64,
                max_value=max_budget,
                value=min(persona.context_budget, max_budget),
                step=64,
                key=compare_key(f"{prefix}budget", index, persona_id),
            )
            chosen.append(ColumnChoice(persona_id, model.strip() or persona.model, int(budget)))
    return chosen


def columns_setup(service: VisitorService, personas: dict[str, Persona]) -> None:
    st.caption(tr("compare.columns.about"))
    count = int(
        st.number_input(tr("compare.columns.count"), min_value=2, max_value=4, value=3, key=Key.COMPARE_COUNT)
    )
    chosen = column_choices(service, personas, count, "")
    blind = st.toggle(tr("compare.columns.blind"), key=Key.COMPARE_BLIND)
    started = st.button(tr("compare.start"), type="primary", icon="⚖️")
    if started and service.start_comparison(personas, chosen, blind=blind) is not None:
        st.rerun()


def blind_pair_setup(service: VisitorService, personas: dict[str, Persona]) -> None:
    st.caption(tr("compare.blind.about"))
    first, second = column_choices(service, personas, 2, "pair_")
    started = st.button(tr("compare.blind.start"), type="primary", icon="🙈")
    if started and service.start_blind_pair(personas, first, second) is not None:
        st.rerun()


def saved_list(service: VisitorService) -> None:
    try:
        saved = service.saved_comparisons()
    except DashboardError as error:
        st.error(tr("compare.saved.failed", error=error_text(error)))
        return
    if not saved:
        return
    with st.expander(tr_plural("compare.saved.header", len(saved)), icon="🗂️"):
        for comparison_id, title in saved:
            st.button(
                as_markdown(title),
                key=f"open_comparison::{comparison_id}",
                on_click=open_saved,
                args=(service, comparison_id),
                width="stretch",
            )


def recent_comparisons(service: VisitorService) -> None:
    """The newest comparisons, each a link to the Compare page with it open (under the
    conversation list: a comparison is a conversation with several columns)."""
    try:
        saved = service.saved_comparisons()[:RECENT_COMPARISONS]
    except DashboardError:
        return  # the conversation list above already says the store cannot be read
    for comparison_id, title in saved:
        st.page_link(
            "app_pages/compare.py",
            label=as_markdown(title),
            icon="⚖️",
            query_params={COMPARISON_PARAM: comparison_id},
            help=tr("compare.saved.link_help"),
            width="stretch",
        )


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


# --- the open comparison -------------------------------------------------------------------------


def comparison_view(service: VisitorService, comparison: Comparison) -> None:
    snapshot = comparison.snapshot()
    top = st.columns([2, 1, 1, 1])
    top[0].subheader(tr("compare.blind.header") if snapshot.blind else tr("compare.header"))
    top[1].button(tr("compare.new"), on_click=close, args=(service,), disabled=snapshot.busy)
    if not snapshot.busy and snapshot.rounds:
        if not snapshot.labels_hidden:  # the JSON names every column's persona and model
            top[2].download_button(
                "JSON",
                comparison.to_json(),
                file_name="comparison.json",
                mime="application/json",
                on_click="ignore",
            )
        top[3].download_button(
            "Markdown",
            comparison.to_markdown(tr("compare.header")),
            file_name="comparison.md",
            mime="text/markdown",
            on_click="ignore",
        )
    if snapshot.labels_hidden:
        st.info(tr("compare.blind.hidden"), icon="🙈")
    limits = service.limits
    prompt = st.chat_input(
        tr("compare.input"),
        key=Key.COMPARE_INPUT,
        disabled=snapshot.busy,
        max_chars=limits.max_message_chars if limits else None,
    )
    if prompt and not snapshot.busy:
        try:
            service.compare_send(prompt)
        except DashboardError as error:
            st.error(error_text(error))
        snapshot = comparison.snapshot()
    # While any column streams the columns redraw themselves; the rest of the page waits.
    if snapshot.rounds and not snapshot.busy:
        service.save_comparison()  # anything not saved yet (the columns save themselves as they go)
    if service.comparison_id is not None:  # saved with its question: a reload returns to it
        st.query_params[COMPARISON_PARAM] = service.comparison_id
    live = st.fragment(run_every=LIVE_S if snapshot.busy else None)(columns_part)
    live(service, comparison, snapshot.busy)
    if snapshot.busy:
        return
    chart = comparison_spec(snapshot, chart_texts())
    if chart is not None:
        vega_chart(chart, width="stretch", height=260)
    vote_buttons(service, snapshot)


def columns_part(service: VisitorService, comparison: Comparison, was_busy: bool) -> None:
    """The columns as of now; reruns itself while any streams (see `comparison_view`)."""
    snapshot = comparison.snapshot()
    if was_busy != snapshot.busy:
        # The last column ended (save, chart and vote on the whole page), or a Retry clicked in
        # here started one (the whole page makes this fragment redraw itself while it streams).
        st.rerun()
    for column, view in zip(st.columns(len(snapshot.columns)), snapshot.columns, strict=True):
        with column:
            draw_column(view, service)


def draw_column(view: ColumnView, service: VisitorService) -> None:
    label = tr("compare.answer", letter=view.letter) if view.hidden else view.label
    st.markdown(f"**{as_markdown(label)}**")
    if not view.hidden and view.model:
        st.caption(tr("compare.column.caption", model=view.model, budget=f"{view.context_budget:,}"))
    drawn = set()
    for message in view.messages[1:]:  # the system prompt would tell a hidden column's persona
        if message.state is not MessageState.CONTEXT:
            continue
        drawn.add(message.id)
        with st.chat_message(message.role):
            st.markdown(as_markdown(message.content))
    figures = view.figures
    # The current answer, until it is in the history above (as it streams, or stopped or failed).
    if figures is not None and (figures.reply_id is None or figures.reply_id not in drawn):
        if view.text or view.running:
            with st.chat_message("assistant"):
                st.markdown(as_markdown(view.text or "…"))
        if view.state == "failed" and figures.error is not None:
            st.error(as_markdown(error_text(figures.error)))
    state = tr(f"compare.state.{view.state}") if view.state in NAMED_STATES else ""
    # Sizes and costs would tell a hidden column's persona and model: shown after the vote.
    line = "" if view.hidden else figures_line(figures)
    st.caption(" · ".join(part for part in (state, line) if part) or " ")
    if view.running:
        st.button(
            tr("compare.stop"),
            key=f"stop_column::{view.index}",
            on_click=act,
            args=(service, functools.partial(service.compare_stop, view.index)),
            disabled=view.stopping,
        )
    elif view.can_retry:
        st.button(
            tr("compare.retry"),
            key=f"retry_column::{view.index}",
            on_click=act,
            args=(service, functools.partial(service.compare_retry, view.index)),
        )


def vote_buttons(service: VisitorService, snapshot: ComparisonSnapshot) -> None:
    """Which answer to the latest message is better: one of them, a tie, or all bad."""
    if snapshot.can_pick:
        st.markdown(f"**{tr('compare.vote.header')}**")
        options: list[tuple[str, Callable[[], None]]] = [
            (
                tr("compare.vote.preferred", label=view.letter),
                functools.partial(service.compare_vote, "preferred", view.index),
            )
            for view in snapshot.columns
        ]
        options.append((tr("compare.vote.tie"), functools.partial(service.compare_vote, "tie")))
        options.append((tr("compare.vote.both_bad"), functools.partial(service.compare_vote, "both_bad")))
        for column, (label, vote) in zip(st.columns(len(options)), options, strict=True):
            column.button(label, key=f"vote::{label}", on_click=act, args=(service, vote), width="stretch")
    if snapshot.picks:
        st.caption(
            vote_summary(snapshot.picks[-1].outcome, snapshot.picks[-1].label, snapshot.picks[-1].round)
        )


def vote_summary(outcome: str, label: str | None, round_number: int) -> str:
    if outcome == "preferred" and label is not None:
        return tr("compare.vote.done_preferred", label=label, number=round_number)
    return tr(f"compare.vote.done_{outcome}", number=round_number)
