"""Fairness: another visitor's chat while someone replays what-ifs, against the same chat alone.

One `streamlit run` server (as `benchmarks.load` starts it: offline model with no pacing, private
workspaces, a throwaway SQLite store) and two visitors speaking Streamlit's WebSocket protocol
as browser tabs do (`benchmarks.load.Visitor`):

- the *replayer* builds the largest conversation a what-if replays (199 exchanges: the system
  prompt and 398 messages, under `core.chat.replay.MAX_REPLAY_MESSAGES`) by sending every question
  through the chat input, opens the What if view, and then, for a whole window, sets the view's
  budget to a value it has not used yet and waits for the page, again and again with no pause
  (a new scenario each time, so no kept result is reused: every run replays the conversation
  under the scenario and under every policy, as the page does with a simulated cache);
- the *chatter*, with a long history of its own, sends a chat message every `--interval` seconds
  (never before its previous turn has settled) and after each reply asks for a page rerun.

The windows alternate alone / replaying / replaying / alone (`--rounds` times), so a trend in
the machine's load or in the chatter's growing history falls on both sides alike. For each side
it prints the chatter's turn (send → the reply's last token, p50 and p95), the time until the
page has settled after the reply, a plain page rerun (p50, p95) and the server's CPU, then how
much slower each figure is while the replayer replays.

Run: python -m benchmarks.whatif_load [--window 30] [--rounds 1] [--interval 1.0] [--kept]

`--kept` is the control: the replayer sets the same budget every time, so the view shows the
replay it kept and nothing is replayed; what remains is a visitor rerunning the view that fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import ClientConnection

from benchmarks.load import TURN_TIMEOUT_S, Turn, Visitor, percentile, server_use, streamlit_server
from core.chat.replay import MAX_REPLAY_MESSAGES
from ui.chat_page import HISTORY_SHOWN
from ui.state import Key

WINDOW_S = 30.0
INTERVAL_S = 1.0
#: The chatter's exchanges before the first window: more messages than the chat draws on a rerun
#: (`ui.chat_page.HISTORY_SHOWN`), so its turns cost the same in every window (with a history
#: still growing, the later windows' turns cost more whoever replays).
CHATTER_HISTORY = HISTORY_SHOWN // 2 + 5
#: The replayer's exchanges: the system prompt and two messages each, the most the cap allows.
REPLAYED_EXCHANGES = (MAX_REPLAY_MESSAGES - 1) // 2
#: Budgets the replayer cycles through (plus 256 more each round, so each scenario is new): one
#: that drops most of the conversation, one that keeps all of it in context.
BUDGETS = (4_096, 120_000)
TARGET_SLOWDOWN = 0.20
#: The figures the target holds for (a p95 of a few dozen reruns is one slow rerun).
TARGETED = ("turn p50", "turn p95", "settled p50", "rerun p50")
ALONE, REPLAYING = "alone", "replaying"


class Schedule:
    """The windows, as the main thread announces them: both visitors meet it at `start` before a
    window (which then sets `ends`: the window starts once both are ready) and at `end` after it,
    when each has finished what it started in it. No `phase`: the end of the run."""

    def __init__(self, window_s: float, timeout_s: float) -> None:
        self.window_s = window_s
        self.phase = ""
        self.ends = 0.0
        self.start = threading.Barrier(3, action=self._begin, timeout=timeout_s)
        self.end = threading.Barrier(3, timeout=timeout_s)

    def _begin(self) -> None:
        self.ends = time.monotonic() + self.window_s

    def abort(self) -> None:
        self.start.abort()
        self.end.abort()


@dataclass
class Rerun:
    phase: str
    seconds: float


class Chatter(Visitor):
    """Chats at a steady pace and asks for a page rerun after each reply, every turn and rerun
    tagged with the window it was made in."""

    def __init__(self, port: int, schedule: Schedule, interval_s: float) -> None:
        super().__init__(port, index=0, offset_s=0.0, duration_s=0.0)
        self.schedule = schedule
        self.interval_s = interval_s
        self.phases: list[str] = []  # the phase of each of `turns`
        self.reruns: list[Rerun] = []
        self.number = 0

    def _chat(self, ws: ClientConnection) -> None:
        try:
            for _ in range(CHATTER_HISTORY):
                self._ask(ws)
            while True:
                self.schedule.start.wait()
                if not self.schedule.phase:
                    return
                phase, due = self.schedule.phase, time.monotonic()
                while due < self.schedule.ends:
                    time.sleep(max(0.0, due - time.monotonic()))
                    self._ask(ws)
                    self.phases.append(phase)
                    self.reruns.append(Rerun(phase, self.rerun(ws)))
                    due = max(due + self.interval_s, time.monotonic())
                self.schedule.end.wait()
        except BaseException:
            self.schedule.abort()
            raise

    def _ask(self, ws: ClientConnection) -> None:
        turn = self.turn(ws, f"访客的第{self.number}个问题：北京烤鸭怎么吃？")
        self.number += 1
        if turn.error is not None:
            raise RuntimeError(turn.error)
        self.turns.append(turn)


class Replayer(Visitor):
    """Builds the largest conversation a what-if replays, through the chat input, then replays it
    under a new budget, again and again, for every replaying window."""

    def __init__(self, port: int, schedule: Schedule, *, new_scenarios: bool = True) -> None:
        super().__init__(port, index=1, offset_s=0.0, duration_s=0.0)
        self.schedule = schedule
        #: False: the same budget every time, so the page shows the replay it kept (the control:
        #: a visitor rerunning the view as fast, with no replay to make).
        self.new_scenarios = new_scenarios
        self.budget_input_id = ""
        self.replays: list[float] = []
        self.runs = 0

    def _chat(self, ws: ClientConnection) -> None:
        try:
            for number in range(REPLAYED_EXCHANGES):
                turn = self.turn(ws, f"第{number}个问题：麻婆豆腐和宫保鸡丁哪个更下饭？")
                if turn.error is not None:
                    raise RuntimeError(turn.error)
            self._what_if(ws, None)  # opens the view (its default budget) and finds its budget input
            if not self.budget_input_id:
                raise RuntimeError("the What if view has no budget input")
            while True:
                self.schedule.start.wait()
                if not self.schedule.phase:
                    return
                while self.schedule.phase == REPLAYING and time.monotonic() < self.schedule.ends:
                    self.replays.append(self._what_if(ws, self._next_budget()))
                self.schedule.end.wait()
        except BaseException:
            self.schedule.abort()
            raise

    def _next_budget(self) -> int:
        if not self.new_scenarios:
            return BUDGETS[0]
        budget = BUDGETS[self.runs % len(BUDGETS)] + 256 * (self.runs // len(BUDGETS) + 1)
        self.runs += 1
        return budget

    def _what_if(self, ws: ClientConnection, budget: int | None) -> float:
        """The What if view run with `budget` set (None: as it stands), until its run has finished;
        the seconds it took. The page must show the replay's table, and no error."""
        request = BackMsg()
        request.rerun_script.query_string = self._query_string
        request.rerun_script.page_name = "whatif"
        if budget is not None:
            state = request.rerun_script.widget_states.widgets.add()
            state.id = self.budget_input_id
            state.double_value = budget
        sent = time.monotonic()
        ws.send(request.SerializeToString())
        tables = 0
        for message, _ in self.run_messages(ws, sent + 4 * TURN_TIMEOUT_S):
            element = message.delta.new_element
            which = element.WhichOneof("type")
            if which == "number_input" and element.number_input.id.endswith(Key.WHATIF_BUDGET):
                self.budget_input_id = element.number_input.id
            elif which == "dataframe":
                tables += 1
            elif which == "exception" or (which == "alert" and element.alert.format == element.alert.ERROR):
                raise RuntimeError(f"the What if view failed: {message}")
        if message.script_finished != ForwardMsg.FINISHED_SUCCESSFULLY or not tables:
            raise RuntimeError("the What if view did not show a replay")
        return time.monotonic() - sent


@dataclass
class Side:
    """One side of the comparison: what the chatter met, and the server's CPU meanwhile."""

    turns: list[Turn] = field(default_factory=list)
    reruns: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0

    def figures(self) -> dict[str, float]:
        answered = [t.last_token_s for t in self.turns if t.last_token_s is not None]
        settled = [t.settled_s for t in self.turns if t.settled_s is not None]
        return {
            "turn p50": percentile(answered, 0.5),
            "turn p95": percentile(answered, 0.95),
            "settled p50": percentile(settled, 0.5),
            "settled p95": percentile(settled, 0.95),
            "rerun p50": percentile(self.reruns, 0.5),
            "rerun p95": percentile(self.reruns, 0.95),
        }


def measure(
    window_s: float, rounds: int, interval_s: float, new_scenarios: bool
) -> tuple[dict[str, Side], Replayer, str]:
    folder = tempfile.mkdtemp(prefix="dashboard-whatif-")
    schedule = Schedule(window_s, timeout_s=REPLAYED_EXCHANGES * TURN_TIMEOUT_S)
    sides = {ALONE: Side(), REPLAYING: Side()}
    try:
        with streamlit_server(folder, []) as server:
            port: int = server.port  # type: ignore[attr-defined]
            warm = Visitor(port, -1, 0.0, 0.1)
            warm.run()
            if warm.failure:
                raise RuntimeError(f"the page does not answer: {warm.failure}")
            chatter, replayer = (
                Chatter(port, schedule, interval_s),
                Replayer(port, schedule, new_scenarios=new_scenarios),
            )
            threads = [threading.Thread(target=v.run, daemon=True) for v in (chatter, replayer)]
            for thread in threads:
                thread.start()
            try:
                for phase in [ALONE, REPLAYING, REPLAYING, ALONE] * rounds:
                    schedule.phase = phase
                    schedule.start.wait()
                    started, cpu = time.monotonic(), server_use(server.pid).cpu_s
                    schedule.end.wait()
                    sides[phase].seconds += time.monotonic() - started
                    sides[phase].cpu_s += server_use(server.pid).cpu_s - cpu
                schedule.phase = ""
                schedule.start.wait()
            except threading.BrokenBarrierError:
                pass
            for thread in threads:
                thread.join(4 * TURN_TIMEOUT_S)
            failure = chatter.failure or replayer.failure
            if failure:
                raise RuntimeError(failure)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for turn, phase in zip(chatter.turns[CHATTER_HISTORY:], chatter.phases, strict=True):
        sides[phase].turns.append(turn)
    for rerun in chatter.reruns:
        sides[rerun.phase].reruns.append(rerun.seconds)
    return sides, replayer, f"{os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=1, help="times to run alone/replaying/replaying/alone")
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between turns")
    parser.add_argument(
        "--kept",
        action="store_true",
        help="the control: the replayer reruns the view with the same budget (the kept replay)",
    )
    args = parser.parse_args(argv)
    load_before = f"{os.getloadavg()[0]:.2f}"
    sides, replayer, load_after = measure(args.window, args.rounds, args.interval, not args.kept)
    alone, replaying = sides[ALONE], sides[REPLAYING]
    print(
        f"one `streamlit run` server, {os.cpu_count()} cores, load average {load_before} before and "
        f"{load_after} after; {2 * args.rounds} windows of {args.window:.0f} s each side; the replayer's "
        f"conversation has {2 * REPLAYED_EXCHANGES + 1} messages (cap {MAX_REPLAY_MESSAGES}); "
        f"{len(replayer.replays)} what-if runs, "
        + (
            f"median {percentile(replayer.replays, 0.5):.2f} s, max {max(replayer.replays):.2f} s\n"
            if replayer.replays
            else "none\n"
        )
    )
    header = (
        f"{'another visitor':<16} | {'nobody replaying':>16} | {'a replay running':>16} | {'slowdown':>8}"
    )
    print(header)
    print("-" * len(header))
    before, during = alone.figures(), replaying.figures()
    for name, value in before.items():
        slowdown = during[name] / value - 1
        print(f"{name + ' s':<16} | {value:>16.3f} | {during[name]:>16.3f} | {slowdown:>+8.0%}")
    print(f"{'turns':<16} | {len(alone.turns):>16} | {len(replaying.turns):>16} |")
    print(
        f"{'server CPU %':<16} | {100 * alone.cpu_s / alone.seconds:>16.0f} | "
        f"{100 * replaying.cpu_s / replaying.seconds:>16.0f} |"
    )
    worst = max(during[name] / before[name] - 1 for name in TARGETED)
    verdict = "ok" if worst <= TARGET_SLOWDOWN else "MISSED"
    print(
        f"\nturn: send → the reply's last token; settled: send → the page redrawn after the reply; "
        f"rerun: a page rerun with nothing changed. Target: turn p50 and p95, settled p50 and rerun p50 "
        f"at most {TARGET_SLOWDOWN:.0%} slower: {verdict} (worst {worst:+.0%})"
    )


if __name__ == "__main__":
    main()
