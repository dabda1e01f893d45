"""One page rerun of the dashboard against one of a bare chat page, side by side.

A rerun is what Streamlit does on every interaction: the whole script runs again and redraws
the chat, the dashboard and its charts. The yardstick is `benchmarks/bare_chat_page.py`, a page
in the style of Streamlit's chat tutorial (`st.chat_message` + `st.markdown` per message,
`st.chat_input`). Both pages hold the same history at 10, 100 and 500 messages: the dashboard's
built as a user builds it, by sending messages through its chat input (foodie persona, offline
model), the bare page's the same messages; both run under AppTest (no browser, no network) in
this one process, and are timed alternately, so both see the same machine: the ratio is the
median of each dashboard rerun's time over the bare rerun's right after it.

Run: python -m benchmarks.page_rerun [--reruns N] [--profile SIZE] [--app PATH]

A server compiles a page once per process (its ScriptCache), while AppTest compiles it again
on every run, which costs more the longer the script (about 60 ms for this page): here both
pages share one cache, as under `streamlit run`; `--compile-each-run` keeps AppTest's way.

`--profile SIZE` prints where the dashboard's rerun time goes at that history size (cProfile of
the script thread, cumulative).

Then the same under two `streamlit run` servers (one per page, the dashboard's with private
workspaces and a throwaway store), asked for reruns over Streamlit's WebSocket as a browser tab
asks (`benchmarks.load.Visitor`): the dashboard's history sent through its chat input there too,
the bare page's handed to it in a file. The time is from the rerun's request to its last message
(script_finished) at this client, the server's CPU time beside it; each rerun comes
SERVER_PAUSE_S after the last, as a visitor's clicks do (one asked for straight after the last
one finished waited 48 ms on this machine, whatever the page: a 20-line page too).
`--no-server` skips this part.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlit.logger import get_logger
from streamlit.runtime.scriptrunner.script_cache import ScriptCache
from streamlit.testing.v1 import AppTest, app_test, local_script_runner
from streamlit.testing.v1.local_script_runner import LocalScriptRunner
from websockets.sync.client import ClientConnection

from benchmarks.load import Visitor, server_use, streamlit_server
from core.chat.context import DropOldest
from core.chat.session import ChatSession
from core.personas.persona import load_personas
from core.providers.offline import OfflineBackend

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "streamlit_app.py"
BARE = Path(__file__).resolve().parent / "bare_chat_page.py"
SIZES = (10, 100, 500)
RERUNS = 40
TARGETS = {10: 3.0, 100: 3.0, 500: 3.0}  # most the dashboard may cost, in bare-page reruns
#: Seconds between reruns over a server, as between a visitor's clicks.
SERVER_PAUSE_S = 0.2


def question(number: int) -> str:
    """The `number`th message a history is built of: the same under AppTest, over a server, and in
    the bare page's copy."""
    return f"第{number}个问题：麻婆豆腐和宫保鸡丁哪个更下饭？"


def quiet_apptest() -> None:
    """No "missing ScriptRunContext" notes about the benchmark's own thread."""
    get_logger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True


def throwaway_store() -> None:
    """Conversations the benchmark writes go to a temporary database, never the default one."""
    folder = tempfile.mkdtemp(prefix="dashboard-benchmark-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/benchmark.db"


def compile_once() -> None:
    """Every AppTest run in this process shares one script cache, as `streamlit run` does: the
    entry point's (the script runner's cache) and the view's in app_pages/ (`st.navigation`
    runs it from the pages manager's cache, which AppTest also makes anew for every run)."""
    shared = ScriptCache()
    local_script_runner.ScriptCache = lambda: shared  # type: ignore[attr-defined,assignment]
    app_test.ScriptCache = lambda: shared  # type: ignore[attr-defined,assignment]


def history(messages: int) -> ChatSession:
    persona = load_personas(ROOT / "personas").personas["foodie"]
    session = ChatSession.start(persona, OfflineBackend())
    conversation = session.conversation
    for i in range(messages // 2):
        conversation.add_user(question(i))
        DropOldest().fit(conversation)
        conversation.add_assistant(f"第{i}个回答：麻婆豆腐更下饭，麻辣鲜香，配一碗白米饭最好。")
    return session


def open_session(at: AppTest) -> ChatSession:
    """The foodie session the dashboard has open (in its workspace, or before workspaces, in its
    per-persona sessions)."""
    state = at.session_state
    if "service" in state or "workspace" in state:
        workspace = state["service"].workspace if "service" in state else state["workspace"]
        session: ChatSession = workspace.sessions[workspace.current["foodie"]]
        return session
    session = state["sessions"]["foodie"]
    return session


def send_through_page(at: AppTest, messages: int) -> None:
    """Grow the open conversation to `messages` messages the way a user does: one question at a
    time typed into the chat input, answered, saved."""
    number = 0
    while len(open_session(at).conversation.messages) - 1 < messages:
        at.chat_input(key="chat_input").set_value(question(number)).run()
        assert not at.exception, at.exception
        number += 1


def pages(app: Path, messages: int) -> tuple[AppTest, AppTest, ChatSession]:
    """The dashboard and the bare page over the same history, each after a first (warm-up) run."""
    dashboard = AppTest.from_file(str(app), default_timeout=120)
    dashboard.run()  # opens the foodie's conversation
    send_through_page(dashboard, messages)
    session = open_session(dashboard)
    bare = AppTest.from_file(str(BARE), default_timeout=120)
    bare.session_state["messages"] = [m.as_api_message() for m in session.conversation.messages[1:]]
    for page in (dashboard, bare):
        page.run()  # first run: imports, caches
        page.run()
        assert not page.exception, page.exception
    return dashboard, bare, session


def timed(run: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of this process (every thread: AppTest runs the script in one)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def profile(app: Path, messages: int, reruns: int) -> None:
    """cProfile of the dashboard's script thread over `reruns` reruns."""
    dashboard, _, _ = pages(app, messages)
    profiler = cProfile.Profile()
    original = LocalScriptRunner._run_script_thread

    def profiled(self: LocalScriptRunner) -> None:
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    LocalScriptRunner._run_script_thread = profiled  # type: ignore[method-assign]
    try:
        for _ in range(reruns):
            dashboard.run()
    finally:
        LocalScriptRunner._run_script_thread = original  # type: ignore[method-assign]
    print(f"\nprofile of {reruns} dashboard reruns at {messages} messages (cumulative, top 30)\n")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


@dataclass
class Tab:
    """A browser tab's connection to one page of a `streamlit run` server."""

    visitor: Visitor
    socket: ClientConnection
    server_pid: int

    def rerun(self) -> tuple[float, float]:
        """A rerun as any click asks for one, SERVER_PAUSE_S after the last: (its seconds until its
        last message here, the server's CPU seconds meanwhile, in /proc's ticks)."""
        time.sleep(SERVER_PAUSE_S)
        cpu = server_use(self.server_pid).cpu_s
        seconds = self.visitor.rerun(self.socket)
        return seconds, server_use(self.server_pid).cpu_s - cpu


@contextlib.contextmanager
def open_tab(server: Any) -> Iterator[Tab]:
    visitor = Visitor(port=server.port, index=0, offset_s=0, duration_s=0)
    with visitor.connect() as socket:
        visitor.load_page(socket)
        yield Tab(visitor, socket, server.pid)


def server_rows(histories: dict[int, list[dict[str, str]]], reruns: int) -> list[str]:
    """Per history size, the table row of both pages' reruns under their own servers."""
    folder = tempfile.mkdtemp(prefix="dashboard-benchmark-servers-")
    bare_history = Path(folder) / "bare-history.json"
    rows = []
    try:
        with (
            streamlit_server(folder, []) as dashboard_server,
            streamlit_server(
                folder, [], {"BARE_CHAT_HISTORY": str(bare_history)}, script="benchmarks/bare_chat_page.py"
            ) as bare_server,
        ):
            for size, messages in histories.items():
                bare_history.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
                with open_tab(dashboard_server) as dashboard, open_tab(bare_server) as bare:
                    for number in range(size // 2):  # the history sent as a visitor sends it
                        turn = dashboard.visitor.turn(dashboard.socket, question(number))
                        if turn.error is not None:
                            raise RuntimeError(turn.error)
                    dashboard.rerun(), bare.rerun()  # warm-up
                    pairs = [(dashboard.rerun(), bare.rerun()) for _ in range(reruns)]
                wall = statistics.median(d[0] / b[0] for d, b in pairs)
                # /proc counts CPU time in ticks (10 ms here): summed over the reruns, not paired.
                cpu = sum(d[1] for d, _ in pairs) / max(sum(b[1] for _, b in pairs), 1e-9)
                ours = statistics.median(d[0] for d, _ in pairs)
                theirs = statistics.median(b[0] for _, b in pairs)
                verdict = "ok" if wall <= TARGETS[size] else "MISSED"
                rows.append(
                    f"{size:>8} | {ours * 1000:>12.1f} | {theirs * 1000:>12.1f} | {wall:>5.1f}× "
                    f"| {cpu:>16.1f}× | ≤{TARGETS[size]:.0f}× {verdict}"
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reruns", type=int, default=RERUNS)
    parser.add_argument("--profile", type=int, metavar="SIZE", help="profile the dashboard at SIZE")
    parser.add_argument(
        "--compile-each-run", action="store_true", help="compile the script on every run, as AppTest does"
    )
    parser.add_argument("--app", type=Path, default=APP, help="the page to measure (default: this one)")
    parser.add_argument("--no-server", action="store_true", help="measure under AppTest only")
    args = parser.parse_args(argv)
    os.environ["OFFLINE_CHUNK_DELAY_S"] = "0"
    throwaway_store()
    quiet_apptest()
    if not args.compile_each_run:
        compile_once()
    if args.profile:
        profile(args.app, args.profile, args.reruns)
        return

    compiled = "compiled on every run" if args.compile_each_run else "compiled once, as a server does"
    print(
        f"page rerun time, median of {args.reruns} alternating reruns, the ratio the median of each pair's "
        f"(AppTest, offline model, {compiled})\n"
    )
    header = (
        f"{'history':>8} | {'in context':>10} | {'trims':>5} | {'dashboard ms':>12} "
        f"| {'bare chat ms':>12} | {'ratio':>6} | {'CPU ratio':>9} | {'target':>10}"
    )
    print(header)
    print("-" * len(header))
    histories: dict[int, list[dict[str, str]]] = {}
    for size in SIZES:
        dashboard, bare, session = pages(args.app, size)
        dashboard_s, bare_s = [], []
        for _ in range(args.reruns):
            dashboard_s.append(timed(dashboard.run))
            bare_s.append(timed(bare.run))
        conversation = session.conversation
        histories[size] = [m.as_api_message() for m in conversation.messages[1:]]
        ours, theirs = (statistics.median(wall for wall, _ in s) for s in (dashboard_s, bare_s))
        # Each dashboard rerun against the bare rerun right after it: a machine that slows down or
        # speeds up for a while (another process, the CPU's clock) moves both of a pair alike.
        ratio = statistics.median(d[0] / b[0] for d, b in zip(dashboard_s, bare_s, strict=True))
        cpu_ratio = statistics.median(d[1] / b[1] for d, b in zip(dashboard_s, bare_s, strict=True))
        verdict = "ok" if ratio <= TARGETS[size] else "MISSED"
        print(
            f"{size:>8} | {len(conversation.context_messages()):>10} | {len(conversation.trim_events):>5} "
            f"| {ours * 1000:>12.1f} | {theirs * 1000:>12.1f} | {ratio:>5.1f}× | {cpu_ratio:>8.1f}× "
            f"| ≤{TARGETS[size]:.0f}× {verdict}"
        )
    if args.no_server or args.app != APP:
        return
    print(
        f"\nunder `streamlit run`, over its WebSocket as a browser tab, median of {args.reruns} alternating "
        f"reruns {SERVER_PAUSE_S:.1f} s apart (wall ratio: the median of each pair's; CPU ratio: of the "
        "sums)\n"
    )
    header = (
        f"{'history':>8} | {'dashboard ms':>12} | {'bare chat ms':>12} | {'ratio':>6} "
        f"| {'server CPU ratio':>17} | {'target':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in server_rows(histories, args.reruns):
        print(row)


if __name__ == "__main__":
    main()
