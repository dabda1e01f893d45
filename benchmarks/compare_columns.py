"""Compare mode streams its columns concurrently: the time to the last token with 3 columns
against 1, with the offline model and with the local OpenAI-compatible test server.

One column is the plain chat: one `ChatSession` whose reply is read on the calling thread, as
the chat page does. N columns are a `core.compare.comparison.Comparison` sent the same message: one worker
thread per column. Every column asks the same question of the same model, whose reply streams
one word every CHUNK_DELAY_S seconds (the offline model's `chunk_delay_s`; the test server's
`--chunk-delay`, the server running in a process of its own, the columns sharing one
`OpenAIBackend` as the page's columns share their connection's). Fresh conversations each time;
the median of REPEATS runs after one warm-up run.

"Last token" is from the send to the last chunk in any column; "all recorded" is from the send
until every column's turn is recorded (`Comparison.wait()` returned). Target: 3 columns within
1.5x of 1.

Run: python -m benchmarks.compare_columns [--repeats N] [--chunk-delay S]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.compare.comparison import Column, Comparison
from core.counting.model_info import load_model_table
from core.providers.backends import ChatBackend, OpenAIBackend
from core.providers.offline import OfflineBackend
from tests.openai_server import server_process

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
SYSTEM = "You are a helpful cooking assistant."
# 40 words: the test server echoes it back word by word (42 chunks); the offline model's reply
# to it is about as long.
QUESTION = (
    "How should I roast a Peking duck at home for six people on a weeknight, which sauce and "
    "pancakes go with it, what can I prepare the evening before, and how do I keep the skin "
    "crisp until everyone is at the table?"
)
COLUMNS = (1, 2, 3, 4)
REPEATS = 5
CHUNK_DELAY_S = 0.01
TARGET_RATIO = 1.5
PRICES = load_model_table()


def new_session(backend: ChatBackend) -> ChatSession:
    return ChatSession(Conversation(SYSTEM, ChatSettings(model=MODEL, context_budget=8000)), backend)


def one_column(backend: ChatBackend) -> tuple[float, float]:
    """(last token, all recorded) of one plain session read on this thread."""
    session = new_session(backend)
    started = time.perf_counter()
    last = started
    for _ in session.send(QUESTION):
        last = time.perf_counter()
    recorded = time.perf_counter()
    assert session.last_turn is not None, "the reply was not recorded"
    return last - started, recorded - started


def columns(backend: ChatBackend, count: int) -> tuple[float, float]:
    """(last token, all recorded) of a comparison of `count` columns."""
    ticks: list[float] = []

    def clock() -> float:
        ticks.append(time.perf_counter())
        return ticks[-1]

    comparison = Comparison(
        [Column(new_session(backend)) for _ in range(count)], model_table=PRICES, clock=clock
    )
    started = time.perf_counter()
    comparison.send(QUESTION)
    assert comparison.wait(120), "the columns did not finish"
    recorded = time.perf_counter() - started
    view = comparison.snapshot()
    assert all(column.state == "done" for column in view.columns), [c.figures for c in view.columns]
    assert len({column.text for column in view.columns}) == 1, "the columns answered differently"
    # The figures count from send()'s first reading of the clock; count from before the call.
    last = max(column.figures.last_token_s or 0.0 for column in view.columns if column.figures)
    return ticks[0] - started + last, recorded


def measure(run: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    run()  # warm-up: the tokenizer, the SDK client's connection
    samples = [run() for _ in range(repeats)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def report(name: str, backend: ChatBackend, repeats: int) -> bool:
    print(f"\n{name}")
    print(f"{'columns':>8} | {'last token':>10} | {'ratio':>6} | {'all recorded':>12} | {'ratio':>6}")
    print("-" * 56)
    base_last = base_recorded = 0.0
    verdict = True
    for count in COLUMNS:
        if count == 1:
            last, recorded = measure(lambda: one_column(backend), repeats)
            base_last, base_recorded = last, recorded
        else:
            last, recorded = measure(functools.partial(columns, backend, count), repeats)
        ratio, recorded_ratio = last / base_last, recorded / base_recorded
        print(
            f"{count:>8} | {last * 1000:>7.0f} ms | {ratio:>5.2f}x | {recorded * 1000:>9.0f} ms | "
            f"{recorded_ratio:>5.2f}x"
        )
        if count == 3:
            verdict = ratio <= TARGET_RATIO
    return verdict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--chunk-delay", type=float, default=CHUNK_DELAY_S)
    args = parser.parse_args(argv)
    print(
        f"time from the send to the last token, median of {args.repeats} runs; model {MODEL}, "
        f"one chunk every {args.chunk_delay * 1000:g} ms"
    )
    verdicts = [report("offline model", OfflineBackend(chunk_delay_s=args.chunk_delay), args.repeats)]
    with server_process(chunk_delay=args.chunk_delay) as root_url:
        base_url = f"{root_url}/v1"
        backend = OpenAIBackend("sk-compare-benchmark", base_url, max_retries=0)
        verdicts.append(
            report("local OpenAI-compatible server (own process), real SDK", backend, args.repeats)
        )
    ok = all(verdicts)
    print(f"\ntarget: 3 columns within {TARGET_RATIO}x of 1 column: {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
