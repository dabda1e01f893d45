"""The leaderboard: which persona, on which model with which settings, wins the votes cast in
comparisons (core/compare/leaderboard.py), with 95% intervals, records and exports; blind votes
only (the default) or all votes, with how many there are of each."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core.charts import leaderboard_spec
from core.chat.settings import POLICY_NAMES
from core.compare.comparison import Pick
from core.compare.leaderboard import (
    BOOTSTRAP_SAMPLES,
    MIN_VOTES,
    VOTE_SCOPES,
    Contestant,
    Leaderboard,
    VoteCounts,
    VoteScope,
    counted_votes,
    leaderboard,
)
from ui.charts import vega_chart
from ui.state import Key
from ui.text import tr

#: The settings a contestant's description names in words (`leaderboard.setting.<key>`), as
#: `core.compare.comparison.settings_summary` writes them; the other sampling options are named
#: by their API parameter (top_p, presence_penalty, ...).
SETTING_WORDS = {"budget": "budget", "reply cap": "reply_cap", "temperature": "temperature", "seed": "seed"}

#: The last table built, with the picks it was built from (a rerun with no new vote fits nothing).
CACHE_STATE = "leaderboard_cache"


def board_for(conversations: Sequence[Sequence[Pick]], scope: VoteScope) -> Leaderboard:
    key = (scope, tuple(tuple(pick.id for pick in picks) for picks in conversations))
    cached: tuple[object, Leaderboard] | None = st.session_state.get(CACHE_STATE)
    if cached is not None and cached[0] == key:
        return cached[1]
    board = leaderboard(counted_votes(conversations, scope))
    st.session_state[CACHE_STATE] = (key, board)
    return board


def leaderboard_section(conversations: Sequence[Sequence[Pick]]) -> None:
    """The ratings from each conversation's picks (`VisitorService.picks_by_conversation`)."""
    st.subheader(tr("leaderboard.header"))
    st.caption(tr("leaderboard.about", samples=f"{BOOTSTRAP_SAMPLES:,}"))
    counts = VoteCounts.of(conversations)
    chosen = st.segmented_control(
        tr("leaderboard.scope.label"),
        VOTE_SCOPES,
        format_func=lambda scope: tr(f"leaderboard.scope.{scope}", count=counts.counted(scope)),
        default="blind",
        key=Key.LEADERBOARD_SCOPE,
        help=tr("leaderboard.scope.help"),
    )
    scope: VoteScope = chosen or "blind"  # a click on the chosen option clears it
    st.caption(tr("leaderboard.counts", blind=counts.blind, open=counts.open))
    board = board_for(conversations, scope)
    if not board.ratings:
        only_open = scope == "blind" and counts.open
        st.info(tr("leaderboard.empty_blind") if only_open else tr("leaderboard.empty"), icon="🗳️")
        return
    if not board.enough_votes:
        st.warning(tr("leaderboard.not_enough", minimum=MIN_VOTES), icon="⏳")
    rows = [
        {
            tr("leaderboard.column.rank"): str(rank) if row.enough_votes else "—",
            tr("leaderboard.column.persona"): row.contestant.persona or "—",
            tr("leaderboard.column.model"): row.contestant.model,
            tr("leaderboard.column.rating"): round(row.rating),
            tr("leaderboard.column.interval"): f"{row.lower:.0f} – {row.upper:.0f}",
            tr("leaderboard.column.record"): tr(
                "leaderboard.record", wins=row.wins, losses=row.losses, ties=row.ties
            ),
            tr("leaderboard.column.status"): "" if row.enough_votes else tr("leaderboard.row_not_enough"),
            # Last: the longest, and it would push the figures out of a narrow table.
            tr("leaderboard.column.settings"): settings_text(row.contestant.settings),
        }
        for rank, row in enumerate(board.ratings, start=1)
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    spec = leaderboard_spec(
        board,
        rating_title=tr("leaderboard.column.rating"),
        interval_title=tr("leaderboard.column.interval"),
        votes_title=tr("leaderboard.votes"),
        label=contestant_label,
    )
    vega_chart(spec, width="stretch", height=90 + 40 * len(board.ratings))
    st.caption(tr("leaderboard.total", votes=f"{board.votes:,}"))
    columns = st.columns(2)
    columns[0].download_button(
        tr("leaderboard.export_csv"),
        board.to_csv(),
        file_name="leaderboard.csv",
        mime="text/csv",
        icon="⬇️",
        on_click="ignore",
    )
    columns[1].download_button(
        tr("leaderboard.export_json"),
        board.to_json(),
        file_name="leaderboard.json",
        mime="application/json",
        icon="⬇️",
        on_click="ignore",
    )


def settings_text(settings: str) -> str:
    """A contestant's settings in the page's language. They are stored as `settings_summary`
    wrote them (in English: they are part of what identifies a contestant in saved votes)."""
    parts = []
    for part in settings.split(" · "):
        name, _, value = part.rpartition(" ")
        if part in POLICY_NAMES:
            parts.append(tr(f"policy.{part}"))
        elif name in SETTING_WORDS:
            parts.append(tr(f"leaderboard.setting.{SETTING_WORDS[name]}", value=value))
        else:
            parts.append(part)
    return " · ".join(part for part in parts if part)


def contestant_label(contestant: Contestant) -> str:
    """The persona, the model and the settings, in the page's language."""
    parts = (contestant.persona, contestant.model, settings_text(contestant.settings))
    return " · ".join(part for part in parts if part)
