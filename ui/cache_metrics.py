"""The dashboard's prompt-cache figure: the conversation's hit rate, and what caching saved."""

from __future__ import annotations

from streamlit.delta_generator import DeltaGenerator

from core.stats import Totals
from ui.text import money, tr


def cache_metric(total: Totals, column: DeltaGenerator, *, offline: bool = False) -> None:
    """One metric in `column` (the dashboard's grid): the hit rate, and under it the money that
    saved (short: a narrow column cuts a longer line); drawn only where a server reported cached
    tokens. On the offline model (which simulates a prefix cache) the money is what caching would
    save, as the cost metric beside it says what the conversation would cost."""
    if total.cache_saved is None:
        delta = tr("dashboard.cache.delta_unpriced")
    elif offline:
        delta = tr("dashboard.cache.delta_offline", saved=money(total.cache_saved))
    else:
        delta = tr("dashboard.cache.delta", saved=money(total.cache_saved))
    column.metric(
        tr("dashboard.cache.label"),
        f"{total.cache_hit_rate:.0%}",
        delta,
        delta_color="off",
        delta_arrow="off",
        help=tr("dashboard.cache.help"),
    )
