"""A built-in model that needs no key and no network, so the whole dashboard works offline.

Its reply is deterministic and describes what it received: how many messages and prompt tokens
were in its context and the oldest message it can still see. That makes trimming visible in the
chat itself. It reports usage exactly as the API would: prompt tokens counted the API's way,
completion tokens of the reply it sent, cut at the reply cap with finish_reason "length", and
the prompt tokens it served from its prompt cache: a plain prefix cache (`core.chat.prompt_cache`'s
`PREFIX_RULE`, as llama.cpp's server keeps one), so the dashboard's cache figures work offline.

Asked for a summary (the policy "summarize"'s fixed instructions), it writes one deterministically:
see `core.chat.summaries.offline_summary`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.chat.conversation import preview
from core.chat.prompt_cache import PREFIX_RULE, PromptCache, prompt_token_ids
from core.chat.summaries import offline_summary, without_summary
from core.counting.server_tokens import TokenizeClient
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.i18n import Language, translator
from core.providers.backends import Capabilities, ChatBackend, ChatRequest, ReplyStream, Usage
from core.providers.registry import register

if TYPE_CHECKING:
    from core.providers.connection import Connection

_WORDS = re.compile(r"\S+\s*|\s+")


def offline_reply(messages: list[dict[str, str]], prompt_tokens: int, language: Language = "en") -> str:
    """The full text the offline model answers to `messages`, whose prompt is `prompt_tokens` long,
    in `language` (the page's: the offline model stands in for a model, and speaks to the visitor)."""
    text = translator(language)
    conversation = messages[1:] if messages and messages[0]["role"] == "system" else messages
    # The running summary of folded exchanges (policy "summarize") comes first.
    summarized, conversation = without_summary(conversation)
    newest = conversation[-1]["content"] if conversation else ""
    oldest = conversation[0] if conversation else None
    lines = [
        text(
            "offline.reply.received",
            messages=len(messages),
            tokens=prompt_tokens,
            summary=text("offline.reply.summary") if summarized else "",
            exchanges=text.plural("offline.reply.exchanges", (len(conversation) - 1) // 2),
        )
    ]
    if oldest is not None and len(conversation) > 1:
        role = text(f"offline.reply.role.{oldest['role']}")
        lines.append(text("offline.reply.oldest", role=role, text=preview(oldest["content"])))
    lines.append(text("offline.reply.you_said", text=preview(newest)))
    lines.append(text("offline.reply.hint"))
    return "\n\n".join(lines)


class OfflineReplyStream(ReplyStream):
    def __init__(
        self,
        request: ChatRequest,
        chunk_delay_s: float,
        language: Language = "en",
        cache: PromptCache | None = None,
    ) -> None:
        super().__init__()
        self._request = request
        self._chunk_delay_s = chunk_delay_s
        self._language: Language = language
        self._cache = cache if cache is not None else PromptCache(PREFIX_RULE)

    def _chunks(self) -> Iterator[str]:
        request = self._request
        tokenizer = tokenizer_for(request.model)
        prompt_tokens = count_prompt_tokens(request.messages, request.model)
        cached = self._cache.serve(prompt_token_ids(request.messages, tokenizer))
        summary = offline_summary(request.messages, tokenizer)
        reply = (
            summary if summary is not None else offline_reply(request.messages, prompt_tokens, self._language)
        )
        reply_tokens = tokenizer.encoding.encode(reply, disallowed_special=())
        finish_reason = "stop"
        if request.max_reply_tokens is not None and len(reply_tokens) > request.max_reply_tokens:
            reply_tokens = reply_tokens[: request.max_reply_tokens]
            reply = tokenizer.encoding.decode(reply_tokens)
            finish_reason = "length"
        for word in _WORDS.findall(reply):
            if self._chunk_delay_s:
                time.sleep(self._chunk_delay_s)
            yield word
        self.finish_reason = finish_reason
        self.usage = Usage(
            prompt_tokens=prompt_tokens, completion_tokens=len(reply_tokens), cached_prompt_tokens=cached
        )


class OfflineBackend:
    """The default backend when no API key is configured."""

    capabilities = Capabilities(server_usage=False, counting="local", cached_tokens=True, thread_safe=True)

    def __init__(self, *, chunk_delay_s: float = 0.0, language: Language = "en") -> None:
        self.chunk_delay_s = chunk_delay_s
        #: The language it answers in (the page's).
        self.language: Language = language
        #: The prompts it has seen, as a server with a plain prefix cache remembers them.
        self.prompt_cache = PromptCache(PREFIX_RULE)

    def stream(self, request: ChatRequest) -> OfflineReplyStream:
        return OfflineReplyStream(request, self.chunk_delay_s, self.language, self.prompt_cache)

    def tokenize_client(self) -> TokenizeClient | None:
        return None  # counted here, with tiktoken


class Offline:
    """The offline model serves a connection with neither a key nor a base URL."""

    name = "offline"

    def handles(self, connection: Connection) -> bool:
        return connection.offline

    def backend(
        self, connection: Connection, *, offline_chunk_delay_s: float = 0.0, language: Language = "en"
    ) -> ChatBackend:
        return OfflineBackend(chunk_delay_s=offline_chunk_delay_s, language=language)


register(Offline())
