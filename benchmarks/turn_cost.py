"""Per-turn cost of the Conversation against the seed's way of counting, side by side.

For a conversation whose whole history fits a large budget (gpt-4.1's context window), at 20,
200 and 2,000 messages of history, one turn is `add_user` + the drop-oldest policy's `fit` + `add_assistant`.
The seed's way re-encodes every message of the history on every turn (it did so twice; this
counts it once, in its favour). Prints the time per turn and the characters handed to the
tokenizer per turn for both, and their ratio.

Run: python -m benchmarks.turn_cost
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from core.chat.context import DropOldest
from core.chat.conversation import Conversation
from core.chat.settings import ChatSettings
from core.counting import tokens
from core.counting.model_info import load_model_table
from core.counting.tokens import count_prompt_tokens

MODEL = "gpt-4.1"
HISTORY_SIZES = (20, 200, 2_000)
TURNS = 15

QUESTION = "Turn {i}: how would you cook a {dish} for six people on a weeknight, and what can I prep ahead?"
ANSWER = (
    "For the {dish} on turn {i}: prep the aromatics and sauce the night before, keep the garnish "
    "separate, and cook the main part in two batches so the pan stays hot. Serve with rice and a "
    "sharp salad; leftovers keep two days in the fridge."
)
DISHES = ("mapo tofu", "paella", "ramen", "biryani", "shakshuka", "pho", "lasagne", "tagine")

chars_tokenized = 0
_count_text = tokens.Tokenizer.count_text


def counting_count_text(self: tokens.Tokenizer, text: str) -> int:
    global chars_tokenized
    chars_tokenized += len(text)
    return _count_text(self, text)


# Instrument both sides identically.
tokens.Tokenizer.count_text = counting_count_text  # type: ignore[method-assign]


def exchange(i: int) -> tuple[str, str]:
    dish = DISHES[i % len(DISHES)]
    return QUESTION.format(i=i, dish=dish), ANSWER.format(i=i, dish=dish)


def conversation_with_history(messages: int, budget: int) -> Conversation:
    settings = ChatSettings(model=MODEL, context_budget=budget)
    conversation = Conversation("You are a helpful cooking assistant.", settings)
    for i in range(messages // 2):
        question, answer = exchange(i)
        conversation.add_user(question)
        conversation.add_assistant(answer)
    return conversation


def measure(turn: Callable[[int], None]) -> tuple[float, float]:
    """Median seconds and mean characters tokenized per turn over TURNS turns."""
    global chars_tokenized
    seconds, chars = [], []
    for i in range(TURNS):
        chars_tokenized = 0
        start = time.perf_counter()
        turn(10_000 + i)
        seconds.append(time.perf_counter() - start)
        chars.append(chars_tokenized)
    return statistics.median(seconds), statistics.mean(chars)


def main() -> None:
    info = load_model_table().lookup(MODEL)
    assert info is not None, f"{MODEL} must be in models.yaml"
    budget = info.context_window
    print(f"model {MODEL}, context budget {budget:,} tokens, {TURNS} turns per size, median time per turn\n")
    header = (
        f"{'history':>8} | {'prompt tok':>10} | {'ours µs/turn':>12} | {'seed µs/turn':>12} "
        f"| {'speed-up':>8} | {'ours chars/turn':>15} | {'seed chars/turn':>15}"
    )
    print(header)
    print("-" * len(header))
    for size in HISTORY_SIZES:
        ours = conversation_with_history(size, budget)
        seed_history = [m.as_api_message() for m in ours.messages]

        def our_turn(i: int, conversation: Conversation = ours) -> None:
            question, answer = exchange(i)
            conversation.add_user(question)
            DropOldest().fit(conversation)
            conversation.add_assistant(answer)

        def seed_turn(i: int, history: list[dict[str, str]] = seed_history) -> None:
            question, answer = exchange(i)
            history.append({"role": "user", "content": question})
            count_prompt_tokens(history, MODEL)  # the seed re-counts the whole history each turn
            history.append({"role": "assistant", "content": answer})

        ours_s, ours_chars = measure(our_turn)
        seed_s, seed_chars = measure(seed_turn)
        assert not ours.trim_events, "the whole history must fit the budget"
        print(
            f"{size:>8,} | {ours.prompt_tokens:>10,} | {ours_s * 1e6:>12,.0f} | {seed_s * 1e6:>12,.0f} "
            f"| {seed_s / ours_s:>7,.0f}× | {ours_chars:>15,.0f} | {seed_chars:>15,.0f}"
        )


if __name__ == "__main__":
    main()
