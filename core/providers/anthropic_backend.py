"""Anthropic's Messages API through the official `anthropic` SDK: streaming replies, usage with
prompt-cache reads and writes, exact prompt counts from the `count_tokens` endpoint, and
`cache_control` breakpoints at the prompt's stable prefix.

The provider serves a connection whose key is an Anthropic key (`sk-ant-...`) or whose base URL
is api.anthropic.com. The conversation's messages map onto the API as they are: the system
prompt (and the running summary, when there is one) become the `system` blocks, the user and
assistant turns the `messages`.

Usage: Anthropic reports `input_tokens` (read at the full price), `cache_read_input_tokens`
and `cache_creation_input_tokens` apart; the turn's prompt tokens are their sum, of which the
first are cached and the second written (`core.providers.backends.Usage`).

Two cache breakpoints are set on every call: after the system blocks (the part no policy ever
changes) and after the newest user message, which the next call's prompt starts with as long
as the policy only appends (`stable_prefix`); the API finds the previous call's breakpoint by
looking back from the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anthropic
from anthropic.types import MessageParam, RawMessageStreamEvent, TextBlockParam

from core.counting.server_tokens import TokenizeClient, TokenizeFailed
from core.errors import AuthenticationFailed
from core.providers.backends import (
    DEFAULT_REPLY_TIME_LIMIT_S,
    BoundedReplyStream,
    ChatRequest,
    HttpChatBackend,
    ResponseCut,
    SdkErrors,
    ServerAnswer,
    Usage,
)
from core.providers.registry import register

if TYPE_CHECKING:
    from core.i18n import Language
    from core.providers.connection import Connection

ANTHROPIC_HOST: Final = "api.anthropic.com"
KEY_PREFIX: Final = "sk-ant-"
#: Replies are capped; the API needs a cap on every call.
DEFAULT_MAX_TOKENS: Final = 1024
#: Why a reply ended, in the words the rest of the dashboard uses (OpenAI's).
FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "refusal",
}
#: The HTTP status an `error` event in a stream stands for, by its error type.
STREAM_ERROR_STATUS: Final = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
}
#: The message a count of a prompt with no user message is measured with (the API needs one).
_PROBE_TEXT: Final = "."


def request_parts(messages: Sequence[Mapping[str, str]]) -> tuple[list[TextBlockParam], list[MessageParam]]:
    """The API's `system` blocks and `messages` for a conversation's messages, with cache
    breakpoints after the system blocks and after the newest user message."""
    texts = [str(m.get("content", "")) for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    newest_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=-1)
    system: list[TextBlockParam] = [
        _text(text, breakpoint=i == len(texts) - 1) for i, text in enumerate(texts)
    ]
    params = [_turn(m, breakpoint=i == newest_user) for i, m in enumerate(turns)]
    return system, params


def _turn(message: Mapping[str, str], *, breakpoint: bool) -> MessageParam:
    content = [_text(str(message.get("content", "")), breakpoint=breakpoint)]
    if message.get("role") == "user":
        return {"role": "user", "content": content}
    return {"role": "assistant", "content": content}


def _text(text: str, *, breakpoint: bool) -> TextBlockParam:
    if breakpoint:
        return {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}
    return {"type": "text", "text": text}


class AnthropicResponseCut(ResponseCut, anthropic.AnthropicError):
    """A `ResponseCut` in the `anthropic` SDK."""


class AnthropicBackend(HttpChatBackend):
    """Streams replies from the Messages API (see the module docstring). Its bounds (the
    per-reply time limit, the size cut, redirects, public addresses only) and its typed errors
    are `HttpChatBackend`'s, as for the OpenAI-compatible backend; 529 is `Overloaded`."""

    sdk_errors = SdkErrors.of(anthropic, AnthropicResponseCut)
    api_name = "Anthropic's Messages API"
    _client: anthropic.Anthropic

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        quote_server_text: bool = True,
        public_addresses_only: bool = False,
        reply_time_limit_s: float | None = DEFAULT_REPLY_TIME_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            api_key=api_key,
            timeout=timeout,
            quote_server_text=quote_server_text,
            reply_time_limit_s=reply_time_limit_s,
            clock=clock,
        )
        http_client = anthropic.DefaultHttpxClient(
            **self._http_client_options(public_addresses_only=public_addresses_only)
        )
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )

    def _make_tokenize_client(self) -> TokenizeClient:
        """The `count_tokens` endpoint, on this backend's client."""
        return AnthropicTokenCounter(self._client)

    def stream(self, request: ChatRequest) -> AnthropicReplyStream:
        system, messages = request_parts(request.messages)
        options: dict[str, Any] = {}
        sampling = request.sampling
        if sampling.temperature is not None:
            options["temperature"] = min(sampling.temperature, 1.0)  # Anthropic's range is 0-1
        if sampling.top_p is not None:
            options["top_p"] = sampling.top_p
        started = self._clock()
        try:
            events = self._client.messages.create(
                model=request.model,
                system=system,
                messages=messages,
                max_tokens=request.max_reply_tokens or DEFAULT_MAX_TOKENS,
                stream=True,
                **options,
            )
        except anthropic.AnthropicError as exc:
            raise self.error_for(exc, request.model) from None
        return AnthropicReplyStream(
            self,
            request.model,
            events,
            reply_cap=request.max_reply_tokens,
            deadline=self.reply_deadline(started),
        )

    def _answer(self, exc: Exception) -> ServerAnswer | None:
        if not isinstance(exc, anthropic.APIStatusError):
            return None
        status = exc.status_code
        if status == 200:  # an `error` event mid-stream: its type says what went wrong
            status = STREAM_ERROR_STATUS.get(_error_type(exc.body), 500)
        return ServerAnswer(status, exc.response.headers, exc.body, exc.request_id, _error_type(exc.body))


def _error_type(body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("type")) if isinstance(error, dict) else ""


class AnthropicReplyStream(BoundedReplyStream):
    """Text deltas of one streamed reply; usage from `message_start` and `message_delta`."""

    def __init__(
        self,
        backend: AnthropicBackend,
        model: str,
        events: anthropic.Stream[RawMessageStreamEvent],
        *,
        reply_cap: int | None,
        deadline: float | None,
    ) -> None:
        super().__init__(backend, model, reply_cap=reply_cap, deadline=deadline)
        self._events = events

    def close(self) -> None:
        self._events.close()

    def _chunks(self) -> Iterator[str]:
        read = written = uncached = output = 0
        try:
            for event in self._events:
                if event.type == "message_start":
                    usage = event.message.usage
                    uncached = usage.input_tokens
                    read = usage.cache_read_input_tokens or 0
                    written = usage.cache_creation_input_tokens or 0
                    output = usage.output_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield from self._within_size(event.delta.text)
                elif event.type == "message_delta":
                    output = event.usage.output_tokens
                    if event.delta.stop_reason is not None:
                        reason = str(event.delta.stop_reason)
                        self.finish_reason = FINISH_REASONS.get(reason, reason)[:64]
                self._check_time()
        except anthropic.AnthropicError as exc:
            raise self._failed(exc) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._not_the_api(exc) from None
        finally:
            self._events.close()
        if self.finish_reason is None:
            raise self._unfinished()
        self._take_usage(
            lambda: Usage(
                prompt_tokens=uncached + read + written,
                completion_tokens=output,
                cached_prompt_tokens=read,
                cache_write_tokens=written,
            )
        )


class AnthropicTokenCounter(TokenizeClient):
    """Counts prompts with the Messages API's `count_tokens` (kind "anthropic"), for
    `core.counting.methods`: a prompt of any messages, as a call would send them.

    The endpoint needs a user message; a prompt of the system prompt alone is counted as the
    system prompt and a probe message, less what that probe message adds to a prompt.
    """

    kinds = ("anthropic",)

    def __init__(self, client: anthropic.Anthropic) -> None:
        # Not the base class's: there is no OpenAI client here.
        self._anthropic = client.with_options(max_retries=0, timeout=5.0)
        self.root = str(client.base_url)
        self._probe_cost: int | None = None

    def count_anthropic(self, model: str, messages: Sequence[Mapping[str, str]]) -> int:
        """The prompt tokens `messages` cost when sent to `model`."""
        if any(message.get("role") == "user" for message in messages):
            return self._count(model, messages)
        probe = {"role": "user", "content": _PROBE_TEXT}
        return self._count(model, [*messages, probe]) - self._probe(model)

    def _probe(self, model: str) -> int:
        """What a probe user message adds to a prompt (after an exchange)."""
        if self._probe_cost is None:
            user = {"role": "user", "content": _PROBE_TEXT}
            reply = {"role": "assistant", "content": _PROBE_TEXT}
            self._probe_cost = self._count(model, [user, reply, user]) - self._count(model, [user, reply])
        return self._probe_cost

    def _count(self, model: str, messages: Sequence[Mapping[str, str]]) -> int:
        system, turns = request_parts(messages)
        try:
            answer = self._anthropic.messages.count_tokens(model=model, system=system, messages=turns)
        except anthropic.APIStatusError as exc:
            absent = exc.status_code in (400, 404, 405)
            raise TokenizeFailed(f"HTTP {exc.status_code}", absent=absent) from None
        except anthropic.AnthropicError as exc:
            raise TokenizeFailed(type(exc).__name__, absent=False) from None
        count = answer.input_tokens
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise TokenizeFailed("the answer is not a token count", absent=True)
        return count


class AnthropicMessages:
    """Anthropic: a connection with an Anthropic key, or to api.anthropic.com."""

    name = "anthropic"

    def handles(self, connection: Connection) -> bool:
        key = connection.api_key or ""
        return key.startswith(KEY_PREFIX) or connection.host == ANTHROPIC_HOST

    def backend(
        self, connection: Connection, *, offline_chunk_delay_s: float = 0.0, language: Language = "en"
    ) -> AnthropicBackend:
        if not connection.api_key:
            raise AuthenticationFailed("No API key: enter your Anthropic key (sk-ant-...).").coded(
                "no_anthropic_key"
            )
        return AnthropicBackend(
            connection.api_key,
            connection.base_url,
            timeout=connection.timeout_s,
            max_retries=connection.max_retries,
            quote_server_text=connection.quote_server_text,
            public_addresses_only=connection.public_addresses_only,
            reply_time_limit_s=connection.reply_time_limit_s or None,
        )


register(AnthropicMessages())
