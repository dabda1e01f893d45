"""Layout helpers the views share."""

from __future__ import annotations

import streamlit as st
from streamlit.elements.lib.mutable_expander_container import ExpanderContainer


def lazy_expander(label: str, key: str, *, icon: str | None = None) -> ExpanderContainer | None:
    """An expander whose content runs only while it is open (opening or closing it reruns): a
    closed one costs a rerun its label alone, where Streamlit would otherwise build and send
    everything inside it on every rerun. The container while open, else None. Open, it stays
    open when its label changes (another language): Streamlit takes a new label for a new
    element, which would start closed, unless its key's state says otherwise."""
    if st.session_state.get(key):
        st.session_state[key] = True
    expander = st.expander(label, key=key, icon=icon, on_change="rerun")
    return expander if expander.open else None


class Captions:
    """Notes that follow each other, drawn as one caption, a line each: one element where each
    note would be its own (an element costs a rerun about as much as a message of the chat)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        self._lines.append(line)

    def draw(self) -> None:
        """The notes added since the last draw (none: nothing), before what comes next."""
        if self._lines:
            st.caption("  \n".join(self._lines))
            self._lines = []
