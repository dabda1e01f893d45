"""Persona chat dashboard: talk to a model through a persona and watch exactly what it sees.

The entry point. `ui.frame.frame()` draws what every page shares (the language, this visitor's
application service, the sidebar's persona selector and connection, notices, the title); then
`st.navigation` runs the page the URL names, one file per view in app_pages/. Every rule lives in
core/ (`core.service.VisitorService` is the one way a page changes state or calls a model).
"""

import streamlit as st

from ui.frame import frame
from ui.text import tr
from ui.uploads import bound_session_uploads

bound_session_uploads()  # Streamlit holds a session's uploads in memory with no bound of its own
frame()
st.navigation(
    [
        st.Page("app_pages/chat.py", title=tr("views.chat"), url_path="chat", default=True),
        st.Page("app_pages/personas.py", title=tr("views.personas"), url_path="personas"),
        st.Page("app_pages/compare.py", title=tr("views.compare"), url_path="compare"),
        st.Page("app_pages/whatif.py", title=tr("views.whatif"), url_path="whatif"),
    ],
    position="top",
).run()
