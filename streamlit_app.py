"""Persona chat dashboard: talk to a model through a persona and watch exactly what it sees.

The entry point. `ui.frame.frame()` draws what every page shares (the language, this visitor's
application service, the sidebar's persona selector and connection, the view switch, notices, the
title) and finds the view the URL names, one file per view in app_pages/; then that view runs.
Every rule lives in core/ (`core.service.VisitorService` is the one way a page changes state or
calls a model).
"""

from ui.frame import frame
from ui.uploads import bound_session_uploads

bound_session_uploads()  # Streamlit holds a session's uploads in memory with no bound of its own
frame().view.run()
