"""🎭 Personas: the gallery and the editor (ui/personas_view.py)."""

from ui import personas_view
from ui.frame import current_frame

personas_view.page(current_frame())
