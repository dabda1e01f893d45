"""The dashboard's prompt-cache figures: the conversation's hit rate and what caching saved."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.stats import Totals

Translate = Callable[..., str]


def cache_metrics(total: Totals, tr: Translate) -> None:
    """Two metrics side by side; drawn only where a server reported cached tokens."""
    hit, saved = st.columns(2)
    hit.metric(
        tr("dashboard.cache.label"),
        f"{total.cache_hit_rate:.0%}",
        tr("dashboard.cache.delta", cached=f"{total.cached_tokens:,}"),
        delta_color="off",
        delta_arrow="off",
        help=tr("dashboard.cache.help"),
    )
    figure = tr("dashboard.cache_saved.unknown") if total.cache_saved is None else f"${total.cache_saved:.4f}"
    saved.metric(tr("dashboard.cache_saved.label"), figure, help=tr("dashboard.cache_saved.help"))
