"""Capacity: N visitors chatting at once with one `streamlit run` server on this machine.

One server (the offline model with no pacing between words, a throwaway SQLite store, private
workspaces so every visitor has its own, no file watcher as in the Docker image) listens on
127.0.0.1. N headless visitors speak Streamlit's own WebSocket protocol with its protobufs
(`BackMsg` / `ForwardMsg`), as a browser tab does: each loads the page, then sends a chat
message every 5 seconds (never before its previous reply has finished) for a minute, starting
at a random moment of the first 5 seconds. Per N it reports the time from sending a message to
the reply's last token (p50, p95, max), the time until the page has settled (the rerun after the
reply, which redraws the chat and the dashboard), failures (no reply in 30 s, an error or
exception on the page, a dropped connection), the server's CPU time per turn and its resident
memory. The visitors run in this process, on the same two cores: their CPU time is printed too.

Run: python -m benchmarks.load [--visitors 10 25 50] [--duration 60] [--option NAME=VALUE ...]
                                [--against NAME=VALUE ...] [--every SECONDS]

`--against` runs every crowd a second time with those options added, printed on the next line
(e.g. `--against runner.postScriptGC=true`: Streamlit's default full collection after every run,
which .streamlit/config.toml turns off). `--every 60` prints, under each line, the server's
resident memory and its CPU time per turn every minute of the run: whether a long run's memory
levels off or keeps growing (`--visitors 10 --duration 600`). `--generations K` sends K crowds one
after the other to the same server, each leaving (closing its connections) before the next
comes: under each line, per crowd, `--between` seconds after it left, the server's resident
memory and how many visitors' services, conversations, messages and Streamlit sessions are
still alive (the server runs as benchmarks/counted_server.py, which counts them on SIGUSR1).
Streamlit drops a left session after `server.disconnectedSessionTTL` seconds (120; `--option
server.disconnectedSessionTTL=5`), and only when its session store is next touched: a new
visitor's arrival.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

ROOT = Path(__file__).resolve().parent.parent
VISITORS = (10, 25, 50)
DURATION_S = 60.0
INTERVAL_S = 5.0
TURN_TIMEOUT_S = 30.0
TARGET_P95_S = 2.0
REPLY_MARK = "[Offline model]"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Turn:
    last_token_s: float | None = None
    settled_s: float | None = None
    error: str | None = None


@dataclass
class Crowd:
    """What the visitors share: the moment they start chatting, once every one has loaded."""

    loaded: threading.Barrier
    start: float = 0.0


@dataclass
class Visitor:
    port: int
    index: int
    #: When to send the first message, after the crowd's start; and for how long to chat.
    offset_s: float
    duration_s: float
    crowd: Crowd | None = None
    turns: list[Turn] = field(default_factory=list)
    failure: str | None = None
    _query_string: str = ""
    _chat_input_id: str = ""
    _chat_fragment_id: str = ""

    def connect(self) -> ClientConnection:
        """The tab's WebSocket to the server (a context manager), as a browser opens it."""
        return websocket_connect(
            f"ws://127.0.0.1:{self.port}/_stcore/stream",
            subprotocols=["streamlit"],  # type: ignore[list-item]
            open_timeout=30,
            max_size=None,
        )

    def run(self) -> None:
        try:
            with self.connect() as ws:
                self.load_page(ws)
                if self.crowd is not None:
                    self.crowd.loaded.wait()  # the main thread sets the start meanwhile
                    self.crowd.loaded.wait()
                self._chat(ws)
        except Exception as error:  # a dropped connection, a timeout: this visitor failed
            self.failure = f"{type(error).__name__}: {error}"
            if self.crowd is not None:
                self.crowd.loaded.abort()

    def load_page(self, ws: ClientConnection) -> None:
        self.send(ws, None)
        for message, _ in self.run_messages(ws, time.monotonic() + TURN_TIMEOUT_S):
            if message.delta.new_element.WhichOneof("type") == "chat_input":
                self._keep_chat_input(message)
        if not self._chat_input_id:
            raise RuntimeError("the page has no chat input")

    def _keep_chat_input(self, message: ForwardMsg) -> None:
        """As a browser does, keep the newest drawing's ids: the chat is a fragment, so its input's
        value goes with the fragment's id (which changes when the page above it does), and the
        server reruns that fragment alone."""
        self._chat_input_id = message.delta.new_element.chat_input.id
        self._chat_fragment_id = message.delta.fragment_id

    def _chat(self, ws: ClientConnection) -> None:
        start = self.crowd.start if self.crowd is not None else time.monotonic()
        due, stop = start + self.offset_s, start + self.duration_s
        number = 0
        while due < stop:
            time.sleep(max(0.0, due - time.monotonic()))
            self.turns.append(self.turn(ws, f"访客{self.index}的第{number}个问题：北京烤鸭怎么吃？"))
            number += 1
            due = max(due + INTERVAL_S, time.monotonic())

    def turn(self, ws: ClientConnection, text: str) -> Turn:
        turn = Turn()
        sent = time.monotonic()
        deadline = sent + TURN_TIMEOUT_S
        self.send(ws, text)
        try:
            # The run that answers (the chat's fragment; it ends in a rerun), then the rerun that
            # redraws the page.
            for run in (1, 2):
                status = None
                for message, at in self.run_messages(ws, deadline):
                    kind = message.WhichOneof("type")
                    if kind == "script_finished":
                        status = message.script_finished
                    elif kind == "delta":
                        element = message.delta.new_element
                        which = element.WhichOneof("type")
                        # The reply quotes the question, so no earlier reply can be taken for it:
                        # the last streamed version in the first run, or else (when Streamlit
                        # dropped the stream's last deltas for the rerun) the history's in the second.
                        body = element.markdown.body if which == "markdown" else ""
                        if body.startswith(REPLY_MARK) and f"You said: “{text}”" in body:
                            if run == 1 or turn.last_token_s is None:
                                turn.last_token_s = at - sent
                        elif which == "chat_input":
                            self._keep_chat_input(message)
                        elif which == "exception":
                            turn.error = f"exception: {element.exception.message}"
                        elif which == "alert" and element.alert.format == element.alert.ERROR:
                            turn.error = f"error shown: {element.alert.body[:120]}"
                if status != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    break
            turn.settled_s = time.monotonic() - sent
            if turn.last_token_s is None and turn.error is None:
                turn.error = "no reply"
        except TimeoutError:
            turn.error = f"no answer in {TURN_TIMEOUT_S:.0f} s"
            raise
        finally:
            if turn.error is not None:
                self.failure = self.failure or turn.error
        return turn

    def rerun(self, ws: ClientConnection) -> float:
        """A rerun of the page as any click asks for one (nothing changed), until it has finished:
        its seconds."""
        sent = time.monotonic()
        self.send(ws, None)
        for message, _ in self.run_messages(ws, sent + TURN_TIMEOUT_S):
            if message.delta.new_element.WhichOneof("type") == "chat_input":
                self._keep_chat_input(message)
        return time.monotonic() - sent

    def send(self, ws: ClientConnection, text: str | None) -> None:
        """A rerun request as the browser sends it; with `text`, the chat input's submission."""
        request = BackMsg()
        request.rerun_script.query_string = self._query_string
        if text is not None:
            request.rerun_script.fragment_id = self._chat_fragment_id
            state = request.rerun_script.widget_states.widgets.add()
            state.id = self._chat_input_id
            state.chat_input_value.data = text
        ws.send(request.SerializeToString())

    def run_messages(self, ws: ClientConnection, deadline: float) -> Iterator[tuple[ForwardMsg, float]]:
        """The messages of one script run, each with its arrival time, up to its script_finished."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=remaining))
            at = time.monotonic()
            if message.WhichOneof("type") == "page_info_changed":  # the private link's token
                self._query_string = message.page_info_changed.query_string
            yield message, at
            if message.WhichOneof("type") == "script_finished":
                return


@dataclass(frozen=True)
class ServerUse:
    cpu_s: float
    rss_mib: float
    peak_rss_mib: float


def server_use(pid: int) -> ServerUse:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return ServerUse(cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


@contextlib.contextmanager
def streamlit_server(
    folder: str,
    options: list[str],
    env: dict[str, str] | None = None,
    *,
    counted: bool = False,
    script: str = "streamlit_app.py",
) -> Iterator[subprocess.Popen[bytes]]:
    """`streamlit run` of `script` on a free loopback port; with `counted`, one that writes its
    live per-visitor objects to `{folder}/counted.jsonl` on SIGUSR1 (benchmarks/counted_server.py)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    extra, env = (
        env or {},
        {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMLIT_"))},
            "OFFLINE_CHUNK_DELAY_S": "0",
            "ACCESS_MODE": "private",
            "DATABASE_URL": f"sqlite:///{folder}/load.db",
            "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
        },
    )
    env.pop("PERSONAS_DIR", None)
    env.pop("DATABASE_URL_READ_ONLY", None)
    env.update(extra)
    if counted:
        env["COUNTED_OBJECTS_FILE"] = f"{folder}/counted.jsonl"
        command = [sys.executable, "-m", "benchmarks.counted_server", f"--server.port={port}"]
    else:
        command = [sys.executable, "-m", "streamlit", "run", script, f"--server.port={port}"]
    command += ["--server.address=127.0.0.1", "--server.headless=true", "--browser.gatherUsageStats=false"]
    command += [f"--{option}" for option in options]
    with open(f"{folder}/server-{port}.log", "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server.port = port  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(Path(f"{folder}/server-{port}.log").read_text()) from None
                time.sleep(0.1)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass
class Timeline:
    """The server's use sampled every `every_s` while the crowd chats: (seconds since the start,
    turns begun by then, the server's use then)."""

    every_s: float
    samples: list[tuple[float, int, ServerUse]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def follow(self, pid: int, start: float, people: list[Visitor]) -> None:
        """Sample now, then every `every_s` until `done` is set, and once more then."""
        self.samples.append((time.monotonic() - start, sum(len(v.turns) for v in people), server_use(pid)))
        while True:
            finished = self.done.wait(self.every_s)
            turns = sum(len(v.turns) for v in people)
            self.samples.append((time.monotonic() - start, turns, server_use(pid)))
            if finished:
                return

    def lines(self) -> str:
        """A line per sample: resident memory and the server's CPU per turn since the last one."""
        text = f"\n{'':>10} {'s':>6} | {'turns':>6} | {'RSS MiB':>7} | {'peak':>6} | {'server ms/turn':>14}"
        previous: tuple[int, ServerUse] | None = None
        for elapsed, turns, use in self.samples:
            per_turn = (
                f"{(use.cpu_s - previous[1].cpu_s) * 1000 / (turns - previous[0]):>14.0f}"
                if previous is not None and turns > previous[0]
                else f"{'-':>14}"
            )
            memory = f"{use.rss_mib:>7.1f} | {use.peak_rss_mib:>6.1f}"
            text += f"\n{'':>10} {elapsed:>6.0f} | {turns:>6} | {memory} | {per_turn}"
            previous = (turns, use)
        return text


@dataclass
class CrowdRun:
    people: list[Visitor]
    threads: list[threading.Thread]
    idle: ServerUse
    busy: ServerUse
    client_cpu_s: float

    @property
    def turns(self) -> list[Turn]:
        return [t for v in self.people for t in v.turns]

    @property
    def failures(self) -> list[str]:
        """Each visitor's failure, and a visitor whose thread never ended."""
        return [v.failure for v in self.people if v.failure] + [
            "thread still running" for t in self.threads if t.is_alive()
        ]


def run_crowd(
    server: subprocess.Popen[bytes], visitors: int, duration_s: float, timeline: Timeline | None
) -> CrowdRun:
    """`visitors` load the page together, chat for `duration_s`, and leave."""
    port: int = server.port  # type: ignore[attr-defined]
    crowd = Crowd(threading.Barrier(visitors + 1, timeout=4 * TURN_TIMEOUT_S))
    people = [Visitor(port, i, random.uniform(0, INTERVAL_S), duration_s, crowd) for i in range(visitors)]
    threads = [threading.Thread(target=v.run, daemon=True) for v in people]
    for thread in threads:
        thread.start()
    crowd.loaded.wait()  # every visitor has the page
    idle = server_use(server.pid)
    client_cpu = time.process_time()
    crowd.start = time.monotonic()
    if timeline is not None:
        sampler = threading.Thread(target=timeline.follow, args=(server.pid, crowd.start, people))
        sampler.start()
    crowd.loaded.wait()
    for thread in threads:
        thread.join(duration_s + 4 * TURN_TIMEOUT_S)
    busy = server_use(server.pid)
    if timeline is not None:
        timeline.done.set()
        sampler.join()
    return CrowdRun(people, threads, idle, busy, time.process_time() - client_cpu)


def counted_objects(server: subprocess.Popen[bytes], folder: str) -> dict[str, int]:
    """The server's live per-visitor objects, after a full collection (benchmarks/counted_server.py)."""
    path = Path(f"{folder}/counted.jsonl")
    before = len(path.read_text().splitlines()) if path.exists() else 0
    server.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > before:
            counts: dict[str, int] = json.loads(lines[-1])
            return counts
        time.sleep(0.1)
    raise TimeoutError("the server wrote no counts")


def run_load(
    visitors: int,
    duration_s: float,
    options: list[str],
    label: str,
    every_s: float | None = None,
    generations: int = 1,
    between_s: float = 0.0,
) -> str:
    folder = tempfile.mkdtemp(prefix="dashboard-load-")
    later: list[CrowdRun] = []  # the crowds after the first
    try:
        with streamlit_server(folder, options, counted=generations > 1) as server:
            port: int = server.port  # type: ignore[attr-defined]
            # One visitor first, so imports and caches are warm before anything is timed.
            warm = Visitor(port, -1, 0.0, 0.1)
            warm.run()
            if warm.failure:
                raise RuntimeError(f"the page does not answer: {warm.failure}")
            before = server_use(server.pid)
            timeline = Timeline(every_s) if every_s else None
            first = run_crowd(server, visitors, duration_s, timeline)
            # After each crowd has left and the server could drop its sessions.
            gone: list[tuple[ServerUse, dict[str, int]]] = []
            for generation in range(generations if generations > 1 else 0):
                if generation:
                    later.append(run_crowd(server, visitors, duration_s, None))
                time.sleep(between_s)
                gone.append((server_use(server.pid), counted_objects(server, folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    idle, busy, client_cpu = first.idle, first.busy, first.client_cpu_s
    turns, failures = first.turns, first.failures
    answered = [t.last_token_s for t in turns if t.last_token_s is not None]
    settled = [t.settled_s for t in turns if t.settled_s is not None and t.error is None]
    cpu_per_turn = (busy.cpu_s - idle.cpu_s) / max(1, len(turns))
    ok = bool(answered) and not failures and percentile(answered, 0.95) <= TARGET_P95_S
    line = (
        f"{label:<28} | {visitors:>8} | {len(turns):>5} | {len(failures):>8} | "
        + (
            f"{percentile(answered, 0.5):>6.2f} | {percentile(answered, 0.95):>6.2f} | "
            f"{max(answered):>6.2f} | {percentile(settled, 0.95) if settled else float('nan'):>11.2f} | "
            if answered
            else f"{'-':>6} | {'-':>6} | {'-':>6} | {'-':>10} | "
        )
        + f"{cpu_per_turn * 1000:>9.0f} | {busy.cpu_s - idle.cpu_s:>7.1f} | {client_cpu:>7.1f} | "
        f"{before.rss_mib:>5.0f} → {idle.rss_mib:>4.0f} → {busy.rss_mib:>4.0f} ({busy.peak_rss_mib:.0f}) | "
        f"{'ok' if ok else 'MISSED'}"
    )
    for failure in sorted(set(failures))[:5]:
        line += f"\n{'':>10} failure: {failure} (×{failures.count(failure)})"
    if timeline is not None:
        line += timeline.lines()
    if generations > 1:
        names = ("VisitorService", "Conversation", "Message", "AppSession")
        header = f"{'crowd':>6} | {'turns':>6} | {'failures':>8} | {'RSS MiB':>7} | alive once it left"
        line += f"\n{'':>10} {header}: " + ", ".join(names)
        for number, ((use, alive), run) in enumerate(zip(gone, [first, *later], strict=True), 1):
            counts = ", ".join(f"{alive[name]}" for name in names)
            turned, failed = len(run.turns), len(run.failures)
            line += f"\n{'':>10} {number:>6} | {turned:>6} | {failed:>8} | {use.rss_mib:>7.1f} | {counts}"
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, nargs="+", default=list(VISITORS))
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds of chatting per run")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a `streamlit run` option for the server, e.g. server.enableStaticServing=true",
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run each crowd again with these options added, e.g. runner.postScriptGC=true",
    )
    parser.add_argument(
        "--generations",
        type=int,
        default=1,
        metavar="K",
        help="send K crowds one after the other, each leaving before the next; print memory once each left",
    )
    parser.add_argument(
        "--between",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --generations: how long to wait after a crowd leaves before measuring (default 10)",
    )
    parser.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="also print the server's resident memory and CPU per turn every SECONDS of the run",
    )
    args = parser.parse_args(argv)
    print(
        f"one `streamlit run` server, {os.cpu_count()} cores; each visitor sends a message every "
        f"{INTERVAL_S:.0f} s for {args.duration:.0f} s (offline model, no pacing)"
        + "".join(f", --{option}" for option in args.option)
        + "\n"
    )
    header = (
        f"{'server options':<28} | {'visitors':>8} | {'turns':>5} | {'failures':>8} | "
        f"{'p50 s':>6} | {'p95 s':>6} | {'max s':>6} | "
        f"{'settled p95':>10} | {'server ms':>9} | {'srv CPU':>7} | {'cli CPU':>7} | "
        f"{'RSS MiB 1 → N loaded → end (peak)':>31} | target"
    )
    print(header)
    print("-" * len(header))
    variants = [(args.option, "as configured")]
    if args.against:
        variants.append(([*args.option, *args.against], " ".join(args.against)))
    for visitors in args.visitors:
        for options, label in variants:
            line = run_load(
                visitors, args.duration, options, label, args.every, args.generations, args.between
            )
            print(line, flush=True)
    print(
        "\np50/p95/max: send → the reply's last token; settled: send → the rerun after the reply has "
        f"drawn the page; server ms: server CPU per turn; target: p95 ≤ {TARGET_P95_S:.0f} s, no failure"
    )


if __name__ == "__main__":
    main()
