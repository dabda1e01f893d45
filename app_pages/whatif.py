"""🔬 What if: the open conversation replayed under another budget, policy or model (ui/whatif_view.py)."""

from ui import whatif_view
from ui.frame import current_frame

whatif_view.page(current_frame())
