"""What if: replay the open conversation's recorded messages under another budget, policy or
model (core/chat/replay.py) without calling any model, side by side with what really happened: the
prompt tokens per turn, what each turn would have dropped or summarized, and the cost."""

from __future__ import annotations

import streamlit as st

from core.charts import replay_spec
from core.chat import replay
from core.chat.prompt_cache import CACHE_RULES, CacheRuleName
from core.chat.settings import MAX_CONTEXT_BUDGET, MAX_MODEL_NAME, POLICY_NAMES, PolicyName
from core.errors import DashboardError
from ui.charts import vega_chart
from ui.frame import Frame
from ui.state import Key
from ui.text import as_markdown, error_text, money, tr


def page(frame: Frame) -> None:
    service = frame.service
    key, session, _ = service.session_for(frame.persona)
    conversation = session.conversation
    st.subheader(tr("whatif.header"))
    st.caption(tr("whatif.caption"))
    if not conversation.turns:
        st.info(tr("whatif.empty"))
        return
    settings = session.settings
    columns = st.columns(4)
    budget = int(
        columns[0].number_input(
            tr("sidebar.budget.label"),
            min_value=64,
            max_value=MAX_CONTEXT_BUDGET,
            value=min(4096, settings.context_budget),
            step=256,
            key=Key.WHATIF_BUDGET,
        )
    )
    labels = {name: tr(f"policy.{name}") for name in POLICY_NAMES}
    policy: PolicyName = columns[1].selectbox(
        tr("sidebar.policy.label"),
        list(POLICY_NAMES),
        index=POLICY_NAMES.index(settings.context_policy),
        format_func=labels.__getitem__,
        key=Key.WHATIF_POLICY,
    )
    model = (
        columns[2]
        .text_input(
            tr("sidebar.model.label"), value=settings.model, key=Key.WHATIF_MODEL, max_chars=MAX_MODEL_NAME
        )
        .strip()
    )
    rule: CacheRuleName | None = columns[3].selectbox(
        tr("whatif.cache_rule.label"),
        [None, *CACHE_RULES],
        index=1,
        format_func=lambda name: tr(f"whatif.cache_rule.{name or 'none'}"),
        key=Key.WHATIF_CACHE_RULE,
        help=tr("whatif.cache_rule.help"),
    )
    scenario = replay.Scenario(budget=budget, policy=policy, model=model or None, cache_rule=rule)
    try:
        with st.spinner(tr("whatif.running")):
            result = service.replay(key, scenario)
            outcomes = service.replay_policies(key, scenario) if rule else ()
    except DashboardError as error:  # too long to replay here, or another refusal
        st.error(error_text(error))
        return
    show(result)
    if outcomes:
        show_policies(outcomes, result.recorded.cost if result.recorded.priced else None)


def show(result: replay.ReplayComparison) -> None:
    recorded, replayed = result.recorded, result.replayed
    metrics = st.columns(4)
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
    metrics[2].metric(
        tr("whatif.forgotten"), f"{len(result.forgotten_only_in_replay):,}", help=tr("whatif.forgotten.help")
    )
    metrics[3].metric(
        tr("whatif.cache"),
        f"{replayed.cache_hit_rate:.0%}",
        tr("whatif.cache.delta", recorded=f"{recorded.cache_hit_rate:.0%}"),
        delta_color="off",
        delta_arrow="off",
        help=tr("whatif.cache.help"),
    )
    vega_chart(replay_spec(result, tr), width="stretch", height=260)
    for note in replayed.notes:
        st.caption(as_markdown(note))
    if result.forgotten_only_in_replay:
        with st.expander(tr("whatif.forgotten.list", count=len(result.forgotten_only_in_replay))):
            for message in result.forgotten_only_in_replay:
                st.caption(as_markdown(f"{message.role}: {message.preview}"))
    turns = result.turns  # by column, so each heading is translated once, not once a turn
    st.dataframe(
        {
            tr("whatif.table.turn"): [row.number for row in turns],
            tr("whatif.table.recorded"): [row.recorded.prompt_tokens for row in turns],
            tr("whatif.table.replayed"): [row.replayed.prompt_tokens for row in turns],
            tr("whatif.table.difference"): [row.prompt_tokens_difference for row in turns],
            tr("whatif.table.cached_recorded"): [row.recorded.cached_tokens for row in turns],
            tr("whatif.table.cached_replayed"): [row.replayed.cached_tokens for row in turns],
            tr("whatif.table.dropped"): [
                " | ".join(m.preview for m in row.replayed.dropped) for row in turns
            ],
            tr("whatif.table.summarized"): [
                " | ".join(m.preview for m in row.replayed.summarized) for row in turns
            ],
            tr("whatif.table.cost_difference"): [row.cost_difference for row in turns],
        },
        hide_index=True,
    )


def show_policies(outcomes: tuple[replay.PolicyOutcome, ...], recorded_cost: float | None) -> None:
    """Every policy under the same scenario and simulated cache, side by side, with what each
    would have cost more (or less) than what was recorded."""
    st.markdown(f"**{tr('whatif.policies.header')}**")
    st.dataframe(
        [
            {
                tr("whatif.policies.policy"): tr(f"policy.{outcome.policy}"),
                tr("whatif.policies.prompt"): outcome.prompt_tokens,
                tr("whatif.policies.cached"): outcome.cached_tokens,
                tr("whatif.policies.hit_rate"): f"{outcome.cache_hit_rate:.0%}",
                tr("whatif.policies.cost"): money(outcome.cost),
                tr("whatif.policies.cost_difference"): (
                    None if outcome.cost is None or recorded_cost is None else outcome.cost - recorded_cost
                ),
                tr("whatif.policies.forgotten"): outcome.forgotten,
            }
            for outcome in outcomes
        ],
        hide_index=True,
    )
