"""Time of one page rerun with 10, 100 and 500 messages of history, side by side.

A rerun is what Streamlit does on every interaction: the whole script runs again and redraws
the chat, the dashboard and its charts. Measured with AppTest (no browser, no network), on the
foodie persona with the offline model; the history is built directly in the session state.

Run: python -m benchmarks.page_rerun
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.context import DropOldest
from core.offline import OfflineBackend
from core.personas import load_personas
from core.session import ChatSession

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
SIZES = (10, 100, 500)
RERUNS = 7


def history(messages: int) -> ChatSession:
    persona = load_personas(Path(APP).parent / "personas").personas["foodie"]
    session = ChatSession.start(persona, OfflineBackend())
    conversation = session.conversation
    for i in range(messages // 2):
        conversation.add_user(f"第{i}个问题：麻婆豆腐和宫保鸡丁哪个更下饭？")
        DropOldest().fit(conversation)
        conversation.add_assistant(f"第{i}个回答：麻婆豆腐更下饭，麻辣鲜香，配一碗白米饭最好。")
    return session


def main() -> None:
    os.environ["OFFLINE_CHUNK_DELAY_S"] = "0"
    print(f"page rerun time, median of {RERUNS} reruns (AppTest, offline model)\n")
    print(f"{'history':>8} | {'in context':>10} | {'trims':>5} | {'ms/rerun':>9} | {'vs 10':>6}")
    print("-" * 52)
    baseline = None
    for size in SIZES:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["sessions"] = {"foodie": history(size)}
        at.run()  # first run: imports, caches
        assert not at.exception, at.exception
        samples = []
        for _ in range(RERUNS):
            start = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - start)
        conversation = at.session_state.sessions["foodie"].conversation
        median = statistics.median(samples)
        baseline = baseline or median
        print(
            f"{size:>8} | {len(conversation.context_messages()):>10} | {len(conversation.trim_events):>5} "
            f"| {median * 1000:>9.0f} | {median / baseline:>5.1f}×"
        )


if __name__ == "__main__":
    main()
