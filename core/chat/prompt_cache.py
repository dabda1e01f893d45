"""Prompt caches as providers run them, simulated: how many of a prompt's tokens a server would
serve from its cache, given the prompts it saw before.

Providers cache the longest prefix a prompt shares with a recent one. OpenAI counts it from
1,024 tokens on, in whole blocks of 128 (`OPENAI_RULE`); llama.cpp's server and vLLM reuse any
shared prefix, however short (`PREFIX_RULE`). The local test server, the what-if replay and the
prompt-cache benchmark all use this one simulation, so their figures agree.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.chat.conversation import Conversation
from core.counting.tokens import Tokenizer

CacheRuleName = Literal["openai", "prefix"]


@dataclass(frozen=True)
class CacheRule:
    """Which shared prefixes a server serves from cache, and how it counts them."""

    name: CacheRuleName
    #: A shared prefix shorter than this is not served from cache at all.
    min_tokens: int
    #: Past `min_tokens`, cached tokens count in whole blocks of this many.
    block_tokens: int
    #: How many recent prompts the cache remembers.
    remembered: int = 16

    def cached(self, shared: int) -> int:
        """Tokens served from cache when a prompt shares `shared` leading tokens with one seen."""
        if shared < max(self.min_tokens, 1):
            return 0
        return self.min_tokens + (shared - self.min_tokens) // self.block_tokens * self.block_tokens


#: OpenAI's rule: prompts of 1,024 tokens or more, cache hits in increments of 128 tokens.
OPENAI_RULE = CacheRule("openai", min_tokens=1024, block_tokens=128)
#: A plain prefix cache (llama.cpp's server, vLLM's automatic prefix caching): every shared token.
PREFIX_RULE = CacheRule("prefix", min_tokens=0, block_tokens=1)
CACHE_RULES: dict[CacheRuleName, CacheRule] = {"openai": OPENAI_RULE, "prefix": PREFIX_RULE}


def shared_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """How many leading items (tokens, messages) `a` and `b` have in common.

    Slices are compared, not items one by one: the comparison runs in C, halving the span in
    doubt each time, so a replay that asks this of every turn's prompt against the 16 before it
    does not spend its time in a Python loop (holding the interpreter from other visitors).
    """
    if type(a) is not type(b):  # a list's slice never equals a tuple's
        a, b = tuple(a), tuple(b)
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; the first difference, if any, is below hi
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if a[lo:middle] == b[lo:middle]:
            lo = middle
        else:
            hi = middle
    return lo


class PromptCache:
    """One server's cache: `serve` a prompt's tokens, learn how many came from cache. Thread-safe."""

    def __init__(self, rule: CacheRule = OPENAI_RULE) -> None:
        self.rule = rule
        self._recent: deque[tuple[Hashable, ...]] = deque(maxlen=rule.remembered)
        self._lock = threading.Lock()

    def serve(self, tokens: Sequence[int]) -> int:
        """The tokens of this prompt served from cache; the prompt is remembered for the next."""
        prompt = tuple(tokens)
        with self._lock:
            shared = max((shared_prefix(prompt, seen) for seen in self._recent), default=0)
            self._recent.append(prompt)
        return self.rule.cached(shared)

    def serve_messages(self, messages: Sequence[tuple[Hashable, int]]) -> int:
        """As `serve`, for a prompt given message by message as (what it says, its tokens): the
        shared prefix is the leading messages it has in common with a remembered prompt (a
        message's framing comes before its text, so no token past them can be shared)."""
        prompt = tuple(messages)
        with self._lock:
            common = max((shared_prefix(prompt, seen) for seen in self._recent), default=0)
            self._recent.append(prompt)
        return self.rule.cached(sum(tokens for _, tokens in prompt[:common]))

    def clear(self) -> None:
        with self._lock:
            self._recent.clear()


# Framing tokens stand in as negative ids: no text token has one, so they match only each other.
_MESSAGE_FRAME = -1
_NAME_FRAME = -2
_PRIMING = -3


def prompt_token_ids(messages: Iterable[Mapping[str, Any]], tokenizer: Tokenizer) -> list[int]:
    """The token sequence of a chat prompt as `tokenizer` counts it (its length is the prompt's
    count), for comparing prefixes: each message's framing, then its values' tokens, then the
    reply's priming."""
    ids: list[int] = []
    for message in messages:
        ids += [_MESSAGE_FRAME] * tokenizer.tokens_per_message
        for key, value in message.items():
            ids += tokenizer.encoding.encode(str(value), disallowed_special=())
            if key == "name":
                ids += [_NAME_FRAME] * tokenizer.tokens_per_name
    return ids + [_PRIMING] * tokenizer.reply_priming


def prompt_messages(conversation: Conversation) -> list[tuple[Hashable, int]]:
    """What the next call sends, message by message as `PromptCache.serve_messages` takes it:
    (the message's id, or the summary's text, and its prompt tokens), the summary after the
    system prompt; no encoding, so a replay can ask it every turn."""
    blocks: list[tuple[Hashable, int]] = [(m.id, m.tokens) for m in conversation.context_messages()]
    summary = conversation.summary
    if summary is not None:
        blocks.insert(1, (("summary", summary.text), conversation.summary_tokens))
    return blocks
