"""The prompt-cache simulation the test server, the what-if replay and the benchmark share."""

from __future__ import annotations

import random

from core.chat.prompt_cache import (
    OPENAI_RULE,
    PREFIX_RULE,
    CacheRule,
    PromptCache,
    prompt_token_ids,
    shared_prefix,
)
from core.counting.tokens import count_prompt_tokens, tokenizer_for


def test_openais_rule_counts_from_1024_tokens_in_blocks_of_128() -> None:
    assert [OPENAI_RULE.cached(n) for n in (0, 1023, 1024, 1151, 1152, 1300, 5000)] == [
        0,
        0,
        1024,
        1024,
        1152,
        1280,
        4992,
    ]


def test_a_plain_prefix_cache_counts_every_shared_token() -> None:
    assert [PREFIX_RULE.cached(n) for n in (0, 1, 17, 1300)] == [0, 1, 17, 1300]


def test_the_cache_serves_the_longest_prefix_shared_with_a_remembered_prompt() -> None:
    cache = PromptCache(CacheRule("prefix", min_tokens=0, block_tokens=1, remembered=2))
    assert cache.serve([1, 2, 3, 4]) == 0
    assert cache.serve([1, 2, 3, 5]) == 3  # the longest shared prefix
    assert cache.serve([9, 9]) == 0
    assert cache.serve([8]) == 0
    assert cache.serve([1, 2, 3, 7]) == 0  # both [1, 2, 3, ...] were pushed out by the two after them
    assert cache.serve([1, 2, 3, 7, 1]) == 4
    cache.clear()
    assert cache.serve([1, 2, 3, 5]) == 0


def test_prompt_token_ids_are_as_long_as_the_prompt_count_and_share_the_history() -> None:
    tokenizer = tokenizer_for("gpt-4o")
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好 👋 hello 42"}]
    second = [
        *first,
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Bye.", "name": "x"},
    ]
    for messages in (first, second):
        assert len(prompt_token_ids(messages, tokenizer)) == count_prompt_tokens(messages, "gpt-4o")
    shared = shared_prefix(prompt_token_ids(first, tokenizer), prompt_token_ids(second, tokenizer))
    assert shared == count_prompt_tokens(first, "gpt-4o") - tokenizer.reply_priming


def test_a_prompt_given_message_by_message_is_cached_as_its_tokens_would_be() -> None:
    tokenizer = tokenizer_for("gpt-4o")
    history = [{"role": "system", "content": "Be brief. " * 400}]
    by_tokens, by_messages = PromptCache(OPENAI_RULE), PromptCache(OPENAI_RULE)
    for i in range(4):
        history += [{"role": "user", "content": f"question {i} " * 30}]
        tokens = by_tokens.serve(prompt_token_ids(history, tokenizer))
        messages = by_messages.serve_messages(
            [((m["role"], m["content"]), tokenizer.count_message(m)) for m in history]
        )
        assert tokens == messages
        history += [{"role": "assistant", "content": f"answer {i} " * 30}]
    assert tokens > 1024


def test_the_shared_prefix_is_what_comparing_item_by_item_gives() -> None:
    """`shared_prefix` compares slices (in C) instead of items; the answer is the plain loop's."""

    def item_by_item(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
        shared = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            shared += 1
        return shared

    rng = random.Random(17)
    for _ in range(2_000):
        a = [rng.randint(0, 2) for _ in range(rng.randint(0, 40))]
        b = a[: rng.randint(0, len(a))] + [rng.randint(0, 2) for _ in range(rng.randint(0, 40))]
        for x, y in ((a, b), (b, a), (tuple(a), tuple(b)), (a, tuple(b))):
            assert shared_prefix(x, y) == item_by_item(x, y), (x, y)
