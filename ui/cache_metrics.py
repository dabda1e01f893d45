"""The dashboard's prompt-cache figures: the conversation's hit rate and what caching saved."""

from __future__ import annotations

from collections.abc import Sequence

from streamlit.delta_generator import DeltaGenerator

from core.stats import Totals
from ui.text import money, tr


def cache_metrics(total: Totals, columns: Sequence[DeltaGenerator], *, offline: bool = False) -> None:
    """Two metrics side by side, at the foot of two `columns` (the dashboard's grid, filled row by
    row); drawn only where a server reported cached tokens. On the offline model (which
    simulates a prefix cache) the money is what caching would save, as the cost metric beside it
    says what the conversation would cost."""
    hit, saved = columns
    hit.metric(
        tr("dashboard.cache.label"),
        f"{total.cache_hit_rate:.0%}",
        tr("dashboard.cache.delta", cached=f"{total.cached_tokens:,}"),
        delta_color="off",
        delta_arrow="off",
        help=tr("dashboard.cache.help"),
    )
    saved_figure = (
        tr("dashboard.cache_saved.unknown") if total.cache_saved is None else money(total.cache_saved)
    )
    saved.metric(
        tr("dashboard.cache_saved.label"),
        saved_figure,
        tr("dashboard.cache_saved.offline_delta") if offline else None,
        delta_color="off",
        delta_arrow="off",
        help=tr("dashboard.cache_saved.help"),
    )
