"""⚖️ Compare: one message to several personas or models at once (ui/compare_view.py)."""

from ui import compare_view
from ui.frame import current_frame

compare_view.page(current_frame())
