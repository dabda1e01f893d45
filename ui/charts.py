"""The pages' one way to draw a chart: a Vega-Lite spec from core/charts.py, its text in colours
readable on the visitor's theme."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.charts import Spec, in_theme


def vega_chart(spec: Spec, **options: Any) -> None:
    """`st.vega_lite_chart` of `spec` in the theme the browser reported with this run."""
    st.vega_lite_chart(spec=in_theme(spec, st.context.theme.type), **options)
