"""What if: replay the open conversation's recorded messages under another budget, policy or
model (core/replay.py) without calling any model, side by side with what really happened: the
prompt tokens per turn, what each turn would have dropped or summarized, and the cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core import replay
from core.charts import replay_spec
from core.model_info import ModelTable
from core.safe_markdown import page_markdown
from core.session import ChatSession
from core.settings import MAX_CONTEXT_BUDGET, POLICY_NAMES, PolicyName

Translate = Callable[..., str]
#: Results kept per browser session: (conversation identity, its size, the scenario) -> comparison.
CACHE = "whatif_results"


def money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.4f}"


def whatif(session: ChatSession, prices: ModelTable, tr: Translate) -> None:
    conversation = session.conversation
    st.subheader(tr("whatif.header"))
    st.caption(tr("whatif.caption"))
    if not conversation.turns:
        st.info(tr("whatif.empty"))
        return
    settings = session.settings
    columns = st.columns(3)
    budget = int(
        columns[0].number_input(
            tr("sidebar.budget.label"),
            min_value=64,
            max_value=MAX_CONTEXT_BUDGET,
            value=min(4096, settings.context_budget),
            step=256,
            key="whatif_budget",
        )
    )
    labels = {name: tr(f"policy.{name}") for name in POLICY_NAMES}
    policy: PolicyName = columns[1].selectbox(
        tr("sidebar.policy.label"),
        list(POLICY_NAMES),
        index=POLICY_NAMES.index(settings.context_policy),
        format_func=labels.__getitem__,
        key="whatif_policy",
    )
    model = columns[2].text_input(tr("sidebar.model.label"), value=settings.model, key="whatif_model").strip()
    scenario = replay.Scenario(budget=budget, policy=policy, model=model or None)
    cache: dict[tuple[Any, ...], replay.Comparison] = st.session_state.setdefault(CACHE, {})
    cache_key = (id(conversation), len(conversation.messages), len(conversation.turns), scenario)
    result = cache.get(cache_key)
    if result is None:
        with st.spinner(tr("whatif.running")):
            result = replay.compare(conversation, scenario, prices)
        cache.clear()  # one result per browser session is enough
        cache[cache_key] = result
    show(result, tr)


def show(result: replay.Comparison, tr: Translate) -> None:
    recorded, replayed = result.recorded, result.replayed
    metrics = st.columns(3)
    metrics[0].metric(
        tr("whatif.cost"),
        money(replayed.cost if replayed.priced else None),
        tr("whatif.cost.delta", recorded=money(recorded.cost if recorded.priced else None)),
        delta_color="off",
        delta_arrow="off",
    )
    metrics[1].metric(
        tr("whatif.prompt_tokens"),
        f"{replayed.prompt_tokens:,}",
        f"{result.prompt_tokens_difference:+,}",
        delta_color="inverse",
    )
    metrics[2].metric(tr("whatif.forgotten"), f"{len(result.forgotten_only_in_replay):,}")
    st.vega_lite_chart(spec=replay_spec(result), width="stretch", height=260)
    for note in replayed.notes:
        st.caption(page_markdown(note))
    if result.forgotten_only_in_replay:
        with st.expander(tr("whatif.forgotten.list", count=len(result.forgotten_only_in_replay))):
            for message in result.forgotten_only_in_replay:
                st.caption(page_markdown(f"{message.role}: {message.preview}"))
    rows = [
        {
            tr("whatif.table.turn"): row.number,
            tr("whatif.table.recorded"): row.recorded.prompt_tokens,
            tr("whatif.table.replayed"): row.replayed.prompt_tokens,
            tr("whatif.table.difference"): row.prompt_tokens_difference,
            tr("whatif.table.dropped"): " | ".join(m.preview for m in row.replayed.dropped),
            tr("whatif.table.summarized"): " | ".join(m.preview for m in row.replayed.summarized),
            tr("whatif.table.cost_difference"): row.cost_difference,
        }
        for row in result.turns
    ]
    st.dataframe(rows, hide_index=True)
