"""The page's overhead before the model request: from a message's arrival at the server to the
request reaching the model server, with 500 messages of history.

The page runs under AppTest with the real OpenAI SDK, pointed (as a deployer would, through
OPENAI_BASE_URL) at the local OpenAI-compatible test server (tests/openai_server.py) running
in a process of its own, which records the moment each request arrives (on Linux,
`time.perf_counter` is one clock for every process). A message "arrives" when the script runner
is asked for the rerun its chat input triggers, with the widgets' states: where a server starts
once it has read the message off the WebSocket (`AppSession` hands the browser's widget states
to `ScriptRunner.request_rerun`). What AppTest does before that, a server does not: it walks its
copy of the page's elements for the widgets' states and builds a mock runtime, about 5 ms at 500
messages; it is shown on a line of its own. Between arrival and request: the chat input's
callback, where the service starts the turn (the page's rerun comes after the request is on its
way), then the session's turn (the policy's fit, the request built, the SDK's HTTP request). The
history is built by sending messages through the page. The page script is compiled once, as
under `streamlit run`.

Run: python -m benchmarks.turn_overhead [--turns N] [--history N] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.local_script_runner import LocalScriptRunner

from benchmarks.page_rerun import (
    APP,
    compile_once,
    open_session,
    quiet_apptest,
    send_through_page,
    throwaway_store,
)
from core.chat.session import ChatSession
from tests.openai_server import server_process

HISTORY = 500
TURNS = 15
TARGET_MS = 20.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--history", type=int, default=HISTORY)
    parser.add_argument("--app", type=Path, default=APP)
    parser.add_argument("--profile", action="store_true", help="also print where the rerun's time goes")
    args = parser.parse_args(argv)
    quiet_apptest()
    compile_once()
    throwaway_store()
    with server_process() as base_url:
        measure(base_url, args.app, args.history, args.turns, args.profile)


def chat_requests(base_url: str) -> list[dict[str, Any]]:
    """The chat completion requests the model server has received, oldest first."""
    with urllib.request.urlopen(f"{base_url}/_control/requests", timeout=10) as response:
        recorded: list[dict[str, Any]] = json.load(response)
    return [r for r in recorded if r["path"].endswith("/chat/completions")]


def measure(base_url: str, app: Path, messages: int, turns: int, profile: bool) -> None:
    for name in ("OPENAI_TIMEOUT_S", "OPENAI_MAX_RETRIES", "PERSONAS_DIR"):
        os.environ.pop(name, None)
    os.environ.update(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="sk-turn-overhead-benchmark")
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    # The history a user builds: every message sent through the page, answered by the model server.
    send_through_page(at, messages)
    sends: list[float] = []
    arrivals: list[float] = []
    profiler = cProfile.Profile() if profile else None
    with record_send_calls(sends), record_rerun_requests(arrivals), profiled_script(profiler):
        # The first turn after the build is shown on its own; each measured one adds two messages.
        first = turn(at, base_url, sends, arrivals, "第一个问题：北京烤鸭怎么吃？")
        samples = []
        for i in range(turns):
            samples.append(turn(at, base_url, sends, arrivals, f"第{i}个问题：麻婆豆腐怎么做？"))
    conversation = open_session(at).conversation
    assert conversation.turns[-1].usage_source == "server", "the reply did not come from the model server"

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:>8.1f}"

    print(
        f"message arrival → model request at the server, {messages} messages of history "
        f"({len(conversation.context_messages()) - 2} in context), median of {turns} turns\n"
    )
    print(f"{'':44} | {'first':>8} | {'median':>8} | {'max':>8}")
    print("-" * 78)
    rows = [
        ("(AppTest's own setup before the arrival)", 3),
        ("arrival until the session's send()", 0),
        ("send() → request read by the model server", 1),
        ("total: arrival → request at the model server", 2),
    ]
    for label, index in rows:
        values = [sample[index] for sample in samples]
        print(f"{label:44} | {first[index] * 1000:>8.1f} | {ms(values)} | {max(values) * 1000:>8.1f}")
    total = statistics.median(sample[2] for sample in samples) * 1000
    verdict = "ok" if total <= TARGET_MS else "MISSED"
    print(f"\ntarget ≤ {TARGET_MS:.0f} ms: {total:.1f} ms, {verdict}")
    if profiler is not None:
        print(f"\nprofile of the script thread over {turns + 1} turns (the page's and core's functions)\n")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"streamlit_app\.py|core/", 40)


@contextlib.contextmanager
def profiled_script(profiler: cProfile.Profile | None) -> Iterator[None]:
    """Profile AppTest's script thread (the rerun) while active."""
    if profiler is None:
        yield
        return
    original = LocalScriptRunner._run_script_thread

    def run(runner: LocalScriptRunner) -> None:
        profiler.enable()
        try:
            original(runner)
        finally:
            profiler.disable()

    LocalScriptRunner._run_script_thread = run  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        LocalScriptRunner._run_script_thread = original  # type: ignore[method-assign]


def turn(
    at: AppTest, base_url: str, sends: list[float], arrivals: list[float], text: str
) -> tuple[float, float, float, float]:
    """(arrival → send(), send() → request at the server, arrival → request, AppTest's setup
    before the arrival) of one message."""
    before = len(chat_requests(base_url))
    asked = time.perf_counter()
    at.chat_input(key="chat_input").set_value(text).run()
    assert not at.exception, at.exception
    requests = chat_requests(base_url)
    assert len(requests) == before + 1, "the message reached no model"
    received = float(requests[-1]["received_at"])
    arrived = next(moment for moment in arrivals if moment >= asked)  # this message's rerun
    return sends[-1] - arrived, received - sends[-1], received - arrived, arrived - asked


@contextlib.contextmanager
def record_rerun_requests(arrivals: list[float]) -> Iterator[None]:
    """Appends the time AppTest asks its script runner for each rerun (with the widgets' states,
    as a server's session does when a message arrives) to `arrivals` while active."""
    original = LocalScriptRunner.run

    def run(runner: LocalScriptRunner, *args: Any, **kwargs: Any) -> Any:
        arrivals.append(time.perf_counter())
        return original(runner, *args, **kwargs)

    LocalScriptRunner.run = run  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        LocalScriptRunner.run = original  # type: ignore[method-assign]


@contextlib.contextmanager
def record_send_calls(sends: list[float]) -> Iterator[None]:
    """Appends the time of every ChatSession.send() call to `sends` while active."""
    original = ChatSession.send

    def send(session: ChatSession, text: str) -> Iterator[str]:
        sends.append(time.perf_counter())
        return original(session, text)

    ChatSession.send = send  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        ChatSession.send = original  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
