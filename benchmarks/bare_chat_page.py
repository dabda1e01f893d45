"""A bare chat page in the style of Streamlit's chat tutorial ("Build a basic LLM chat app"):
the yardstick `benchmarks/page_rerun.py` measures the dashboard's rerun against.

It draws every message of `st.session_state.messages` (a list of {"role", "content"} dicts the
benchmark fills from the same conversation the dashboard holds; over a server, read from the
file `BARE_CHAT_HISTORY` names when a session starts) with `st.chat_message` + `st.markdown`, and
ends with `st.chat_input`, as the tutorial does.

Run on its own: streamlit run benchmarks/bare_chat_page.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

st.title("Bare chat")

if "messages" not in st.session_state:
    # Under a `streamlit run` server the benchmark hands it the history in a file (under AppTest
    # it sets the session state itself).
    history = os.environ.get("BARE_CHAT_HISTORY")
    st.session_state.messages = json.loads(Path(history).read_text(encoding="utf-8")) if history else []

for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])

if prompt := st.chat_input("What is up?"):
    st.session_state.messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    reply = f"Echo: {prompt}"
    with st.chat_message("assistant"):
        st.markdown(reply)
    st.session_state.messages.append({"role": "assistant", "content": reply})
