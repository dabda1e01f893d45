"""💬 Chat: the conversation beside what the model sees (ui/chat_page.py)."""

from ui import chat_page
from ui.frame import current_frame

chat_page.page(current_frame())
