"""What a chat backend takes and gives back, and the OpenAI-compatible backend.

A backend turns a `ChatRequest` into a `ReplyStream`: iterate it for text chunks as they arrive;
once it is exhausted, `.usage` holds the token usage the server reported (None when it sent
none) and `.finish_reason` why the reply ended. A failure raises a `core.errors.BackendError`
whose `partial_text` keeps what had streamed.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpcore2
import httpx2
import openai
from openai import Stream
from openai.types.chat import ChatCompletionChunk
from pydantic import BaseModel, Field, ValidationError, model_validator

from core.chat.settings import MAX_REPLY_CAP, Sampling
from core.counting.server_tokens import TokenizeClient
from core.errors import (
    AddressRefused,
    AuthenticationFailed,
    BackendError,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    ReplyTimeLimit,
    ReplyTooLong,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
)
from core.policy.netguard import PublicOnlyTransport, RefusedAddressError
from core.providers.registry import register

if TYPE_CHECKING:
    import anthropic

    from core.i18n import Language
    from core.providers.connection import Connection

#: Token counts a server may report; more is not a real reply (and would not fit the store).
MAX_REPORTED_TOKENS = 1_000_000_000
#: A reply may hold this many bytes of text per token of its reply cap, plus the margin.
REPLY_BYTES_PER_TOKEN = 8
REPLY_BYTES_MARGIN = 64 * 1024
#: Total seconds one reply may take, from the request to its last byte (REPLY_TIME_LIMIT_S).
DEFAULT_REPLY_TIME_LIMIT_S = 300.0
#: At most this much of a response that is not a reply stream (an error body, a page) is read.
MAX_OTHER_BODY_BYTES = 1024 * 1024


def reply_size_limit(max_reply_tokens: int | None) -> int:
    """Bytes (UTF-8) of reply text read before a reply is cut: the reply cap (the largest allowed
    cap when there is none) times 8 bytes, plus 64 KiB."""
    cap = max_reply_tokens if max_reply_tokens is not None else MAX_REPLY_CAP
    return cap * REPLY_BYTES_PER_TOKEN + REPLY_BYTES_MARGIN


#: The longest single line (one SSE event) of a reply stream: JSON may escape each byte of text
#: as up to 6 characters, plus room for the rest of the chunk.
MAX_EVENT_BYTES = 6 * reply_size_limit(None) + REPLY_BYTES_MARGIN


class Usage(BaseModel):
    """Token usage as the server reported it. `prompt_tokens` is every prompt token, however it
    was billed; of them, `cached_prompt_tokens` were read from the server's prompt cache and
    `cache_write_tokens` were written to it (Anthropic bills writes apart). None: not reported."""

    prompt_tokens: int = Field(ge=0, le=MAX_REPORTED_TOKENS)
    completion_tokens: int = Field(ge=0, le=MAX_REPORTED_TOKENS)
    cached_prompt_tokens: int | None = Field(None, ge=0, le=MAX_REPORTED_TOKENS)
    cache_write_tokens: int | None = Field(None, ge=0, le=MAX_REPORTED_TOKENS)

    @model_validator(mode="after")
    def _cache_within_prompt(self) -> Usage:
        if (self.cached_prompt_tokens or 0) + (self.cache_write_tokens or 0) > self.prompt_tokens:
            raise ValueError("more prompt tokens read from and written to the cache than the prompt has")
        return self


def cached_tokens_reported(usage: Any) -> int | None:
    """The prompt tokens an OpenAI-compatible usage object says were served from cache: OpenAI's,
    vLLM's and llama.cpp's `prompt_tokens_details.cached_tokens`, or DeepSeek's
    `prompt_cache_hit_tokens` (its `prompt_cache_miss_tokens` are the rest). None: not reported."""
    details = getattr(usage, "prompt_tokens_details", None)
    figures = [getattr(details, "cached_tokens", None), getattr(usage, "prompt_cache_hit_tokens", None)]
    # DeepSeek may also send OpenAI's field, left at 0: the larger figure is the real one.
    reported = [n for n in figures if isinstance(n, int) and not isinstance(n, bool)]
    return max(reported) if reported else None


class ChatRequest(BaseModel):
    """One model call: the messages exactly as they are sent, and the options that go with them."""

    messages: list[dict[str, str]]
    model: str
    max_reply_tokens: int | None = Field(None, ge=1)
    sampling: Sampling = Sampling()


class ReplyStream:
    """Text chunks of one reply. Subclasses implement `_chunks`; this class keeps the record."""

    def __init__(self) -> None:
        self.text = ""
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        #: Set when the server reported usage that is not plausible (it is then left out: `usage`
        #: stays None and the reply itself is kept as it is).
        self.usage_note: str | None = None
        #: "size" or "time" when reading stopped at one of the reply's bounds (a `ReplyCut` is raised).
        self.cut_reason: str | None = None

    def _chunks(self) -> Iterator[str]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks():
            self.text += chunk
            yield chunk

    def close(self) -> None:
        """Stop reading (e.g. the user pressed stop) and release the connection, if any."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports. The rest of core asks this, never the backend's type, so a new
    provider (`core.providers.registry`) is one module that declares its own."""

    #: A reply's usage is the server's report (False: computed here, e.g. the offline model).
    server_usage: bool
    #: How its tokens are counted: "local" with tiktoken here (exact for OpenAI's models, an
    #: estimate otherwise); "server" by its server's tokenizer when it offers one, else an estimate
    #: calibrated to the usage it reports (`core.counting.methods`, through `tokenize_client()`).
    counting: Literal["local", "server"]
    #: Its usage may say how many prompt tokens were read from (or written to) a prompt cache.
    cached_tokens: bool
    #: One instance may stream several replies at once (compare columns may then share it).
    thread_safe: bool


class ChatBackend(Protocol):
    """Anything that can stream a reply: the OpenAI-compatible backend, the offline model, ..."""

    capabilities: Capabilities

    def stream(self, request: ChatRequest) -> ReplyStream: ...

    def tokenize_client(self) -> TokenizeClient | None:
        """The HTTP client that asks this backend's server to count tokens (None: it cannot)."""
        ...


# --- Models, secrets and waits ---------------------------------------------------------------

#: Model families that take `max_completion_tokens` (their `max_tokens` is rejected by OpenAI).
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")

# An OpenAI-style key, or a masked echo of any key ("sk-proj-****abcd", "abcd********wxyz").
_SECRET_PATTERN = re.compile(r"\bsk-[\w\-*]{4,}|[\w\-]*\*{3,}[\w\-*]*")
_SERVER_MESSAGE_CHARS = 300
_FINISH_REASON_CHARS = 64


def uses_max_completion_tokens(model: str) -> bool:
    """True for OpenAI reasoning-family models, whose reply cap is sent as `max_completion_tokens`."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/o3-mini" on routers such as OpenRouter
    return name.startswith(REASONING_MODEL_PREFIXES)


_KEY_PREFIX = re.compile(r"^(?:sk-(?:[a-z]+-)?)")
#: A key body shorter than this is not looked for on its own (it could match ordinary words).
_MIN_KEY_BODY = 8


def scrub_secrets(text: str, api_key: str | None = None) -> str:
    """`text` with `api_key` (also without its `sk-`/`sk-proj-`-style prefix), anything shaped
    like an `sk-…` key and masked keys removed."""
    if api_key:
        forms = {api_key}
        body = api_key
        while (prefix := _KEY_PREFIX.match(body)) and prefix.end():
            body = body[prefix.end() :]
            forms.add(body)
        if "-" in api_key:
            forms.add(api_key.split("-", 1)[1])
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= _MIN_KEY_BODY or form == api_key:
                text = text.replace(form, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait according to `Retry-After` (seconds or an HTTP date) or `retry-after-ms`."""
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            seconds = float(millis) / 1000
        elif (value := headers.get("retry-after")) is None:
            return None
        elif value.strip().replace(".", "", 1).isdigit():
            seconds = float(value)
        else:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)  # HTTP dates are GMT
            seconds = (when - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


# --- Bounds, isolation and errors: what every HTTP backend shares -----------------------------

#: Headers the SDK itself sends. A client for a base URL the visitor typed sends nothing else:
#: no organization or project, no deployer's custom headers (OPENAI_CUSTOM_HEADERS).
_SDK_HEADER_NAMES = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "idempotency-key",
        "transfer-encoding",
        "user-agent",
    }
)


def _only_sdk_headers(authorization: str) -> Callable[[httpx2.Request], None]:
    """A request hook: drop every header the SDK does not send itself; the key is the one given."""

    def hook(request: httpx2.Request) -> None:
        for name in {name.lower() for name in request.headers}:
            if name not in _SDK_HEADER_NAMES and not name.startswith("x-stainless-"):
                del request.headers[name]
        request.headers["Authorization"] = authorization

    return hook


class ResponseCut(Exception):
    """Reading a response body stopped at a bound. Each backend raises it as an error of its own
    SDK (`SdkErrors.response_cut`), which the SDK passes through without retrying or wrapping."""

    def __init__(self, reason: Literal["size", "time"], detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class OpenAIResponseCut(ResponseCut, openai.OpenAIError):
    """A `ResponseCut` in the `openai` SDK."""


class _BoundedBody(httpx2.SyncByteStream):
    """A response body read at most until `deadline`, with no line (one SSE event) longer than
    `max_line_bytes` and, unless None, at most `max_total_bytes` in all."""

    def __init__(
        self,
        inner: httpx2.SyncByteStream,
        *,
        deadline: float | None,
        time_limit_s: float | None,
        max_line_bytes: int,
        max_total_bytes: int | None,
        clock: Callable[[], float],
        cut: type[ResponseCut],
    ) -> None:
        self._inner = inner
        self._deadline = deadline
        self._time_limit_s = time_limit_s
        self._max_line_bytes = max_line_bytes
        self._max_total_bytes = max_total_bytes
        self._clock = clock
        self._cut = cut

    def __iter__(self) -> Iterator[bytes]:
        line = total = 0
        for data in self._inner:
            if self._deadline is not None and self._clock() > self._deadline:
                raise self._cut("time", f"still sending after {self._time_limit_s:g} s")
            total += len(data)
            if self._max_total_bytes is not None and total > self._max_total_bytes:
                raise self._cut("size", f"a response of more than {self._max_total_bytes:,} bytes")
            first = data.find(b"\n")
            # The line that was open, up to its end in this piece; then the line this piece leaves open.
            ended = line + (len(data) if first < 0 else first)
            line = ended if first < 0 else len(data) - data.rfind(b"\n") - 1
            if max(ended, line) > self._max_line_bytes:
                raise self._cut("size", f"a single event of more than {self._max_line_bytes:,} bytes")
            yield data

    def close(self) -> None:
        self._inner.close()


def _bound_responses(
    *, time_limit_s: float | None, untrusted: bool, clock: Callable[[], float], cut: type[ResponseCut]
) -> Callable[[httpx2.Response], None]:
    """A response hook that bounds every body before anything reads it (the SDKs read error
    bodies whole): a reply stream by time and event size, anything else also to 1 MiB in all."""

    def hook(response: httpx2.Response) -> None:
        body = response.stream
        if not isinstance(body, httpx2.SyncByteStream):
            return
        if untrusted and "content-encoding" in response.headers:
            # Identity was asked for; a compressed body is left compressed (and so rejected as
            # not the API's answer) rather than inflated without bound.
            del response.headers["content-encoding"]
        is_reply = response.status_code == 200 and "event-stream" in response.headers.get("content-type", "")
        response.stream = _BoundedBody(
            body,
            deadline=clock() + time_limit_s if time_limit_s else None,
            time_limit_s=time_limit_s,
            max_line_bytes=MAX_EVENT_BYTES,
            max_total_bytes=None if is_reply else MAX_OTHER_BODY_BYTES,
            clock=clock,
            cut=cut,
        )

    return hook


def _refused_address(exc: BaseException) -> RefusedAddressError | None:
    """The refusal to connect behind `exc` (an SDK wraps the transport's error), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, RefusedAddressError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class SdkErrors:
    """The error classes of an official SDK, as `HttpChatBackend.error_for` tells them apart
    (openai's and anthropic's share their names but not their classes)."""

    #: What a response hook raises when a body passes a bound: a `ResponseCut` that is also the
    #: SDK's own error, so the SDK neither retries nor wraps it.
    response_cut: type[ResponseCut]
    connection: type[Exception]
    timeout: type[Exception]
    invalid_response: type[Exception]
    api: type[Exception]

    @classmethod
    def of(cls, sdk: ModuleType, response_cut: type[ResponseCut]) -> SdkErrors:
        names = ("APIConnectionError", "APITimeoutError", "APIResponseValidationError", "APIError")
        return cls(response_cut, *(getattr(sdk, name) for name in names))


@dataclass(frozen=True)
class ServerAnswer:
    """An HTTP answer that is not a reply, as an SDK's status error carries it."""

    status: int
    headers: Mapping[str, str]
    #: The error body as the SDK parsed it (a mapping, text or None).
    body: object
    request_id: str | None
    #: The API's own error code, e.g. OpenAI's "insufficient_quota".
    error_code: object = None


class HttpChatBackend:
    """What every backend that streams replies over HTTP through an official SDK shares (the
    OpenAI-compatible one below, `core.providers.anthropic_backend`): its bounds and its errors.

    - Bounds: a reply is cut (`ReplyTooLong`, `ReplyTimeLimit`; the text so far kept) past
      `reply_size_limit(cap)` bytes of text, past `reply_time_limit_s` seconds from the request
      (None: no limit, measured on `clock`), or at a single event over `MAX_EVENT_BYTES`; any
      other body is read to 1 MiB at most; redirects are never followed.
    - A base URL typed on a public deployment (`public_addresses_only`) is reached only at public
      addresses (`core.policy.netguard`), never through a proxy, and its bodies are never inflated.
    - Errors: `error_for` maps the SDK's errors to `core.errors` (the same class and code for
      the same HTTP status, whichever API), never quoting the key, and quoting the server only
      when `quote_server_text`.
    - `tokenize_client()` is made once, on first use.

    A subclass makes its SDK client with `_http_client_options()` and sets `_client`; it gives
    its SDK's error classes (`SdkErrors.of`) and `_answer` (what a status error carries).
    """

    capabilities = Capabilities(server_usage=True, counting="server", cached_tokens=True, thread_safe=True)
    sdk_errors: SdkErrors
    #: The API, as an error about a reply that does not follow it names it.
    api_name: str
    _client: openai.OpenAI | anthropic.Anthropic

    def __init__(
        self,
        *,
        api_key: str | None,
        timeout: float,
        quote_server_text: bool,
        reply_time_limit_s: float | None,
        clock: Callable[[], float],
    ) -> None:
        self._api_key = api_key
        self.timeout = float(timeout)
        self.quote_server_text = quote_server_text
        self.reply_time_limit_s = reply_time_limit_s
        self._clock = clock
        self._tokenize_client: TokenizeClient | None = None

    def _http_client_options(
        self,
        *,
        public_addresses_only: bool,
        network_backend: httpcore2.NetworkBackend | None = None,
        request_hooks: Sequence[Callable[[httpx2.Request], None]] = (),
    ) -> dict[str, Any]:
        """Keyword arguments of the SDK's HTTP client that enforce this backend's bounds."""
        transport = PublicOnlyTransport(network_backend=network_backend) if public_addresses_only else None
        bound = _bound_responses(
            time_limit_s=self.reply_time_limit_s,
            untrusted=public_addresses_only,
            clock=self._clock,
            cut=self.sdk_errors.response_cut,
        )
        return {
            "transport": transport,
            "trust_env": not public_addresses_only,
            "follow_redirects": False,
            "headers": {"Accept-Encoding": "identity"},
            "event_hooks": {"request": list(request_hooks), "response": [bound]},
        }

    def tokenize_client(self) -> TokenizeClient:
        """What counts tokens on this backend's server, through its client (made on first use)."""
        if self._tokenize_client is None:
            self._tokenize_client = self._make_tokenize_client()
        return self._tokenize_client

    def _make_tokenize_client(self) -> TokenizeClient:
        raise NotImplementedError

    @property
    def host(self) -> str:
        """The server's host (and port when it is not the scheme's default)."""
        url = self._client.base_url
        host = f"[{url.host}]" if ":" in url.host else url.host
        return f"{host}:{url.port}" if url.port else host

    @property
    def base_url(self) -> str:
        """The base URL requests go to, without any user:password part."""
        url = self._client.base_url
        return f"{url.scheme}://{self.host}{url.path}".rstrip("/")

    def reply_deadline(self, started: float) -> float | None:
        """When a reply whose request was sent at `started` (on `clock`) is cut."""
        return started + self.reply_time_limit_s if self.reply_time_limit_s else None

    # --- errors ----------------------------------------------------------------------------

    def _answer(self, exc: Exception) -> ServerAnswer | None:
        """What `exc` says the server answered, when it is the SDK's status error."""
        raise NotImplementedError

    def error_for(
        self, exc: Exception, model: str, *, partial_text: str = "", mid_stream: bool = False
    ) -> BackendError:
        """The `BackendError` for an SDK error, at the request or (`mid_stream`) while reading."""
        host = self.host
        kept: dict[str, Any] = {"partial_text": partial_text}
        if isinstance(exc, ResponseCut):
            return self.cut_error(exc.reason, model, partial_text, detail=exc.detail, mid_stream=mid_stream)
        if (refused := _refused_address(exc)) is not None:
            return AddressRefused(
                f"{host} resolves to {refused.reason}. For a base URL typed here, this deployment "
                "connects only to public addresses; nothing was sent.",
                **kept,
            ).coded("address_refused", host=host, reason=refused.reason)
        if isinstance(exc, self.sdk_errors.connection):
            return self._transport_error(exc, model, partial_text, mid_stream=mid_stream)
        if (answer := self._answer(exc)) is not None:
            return self.status_error(answer, model, partial_text=partial_text)
        said = self._server_says(getattr(exc, "body", None) or getattr(exc, "message", None))
        if isinstance(exc, self.sdk_errors.invalid_response):
            return BadResponse(
                f"{host} sent a reply for model {model!r} that is not {self.api_name}.{said}", **kept
            )
        if isinstance(exc, self.sdk_errors.api):
            # e.g. an `error` event in the middle of a stream
            return BackendError(f"{host} reported an error for model {model!r}.{said}", **kept)
        detail = f": {self._scrub(str(exc))}" if self.quote_server_text else "."
        return BackendError(f"Request to {host} for model {model!r} failed{detail}", **kept)

    def _transport_error(
        self, exc: Exception, model: str, partial_text: str, *, mid_stream: bool
    ) -> BackendError:
        """No answer: the server could not be reached, took too long, or the connection broke."""
        host = self.host
        kept: dict[str, Any] = {"partial_text": partial_text}
        if not self.quote_server_text and not mid_stream:
            # Refused, timed out, not HTTP, TLS: one text, so errors do not map a network.
            return ConnectionFailed(
                f"Could not reach the server at {host} for model {model!r}. Check the base URL "
                f"{self.base_url}.",
                **kept,
            ).coded("unreachable", host=host, model=model, base_url=self.base_url)
        if isinstance(exc, self.sdk_errors.timeout):
            if mid_stream:
                return RequestTimedOut(
                    f"{host} stopped sending the reply of model {model!r} for over {self.timeout:g} s; "
                    "the text received so far is kept. Try again.",
                    **kept,
                ).coded("stalled", host=host, model=model, seconds=self.timeout)
            return RequestTimedOut(
                f"{host} did not answer within {self.timeout:g} s (model {model!r}). Try again; "
                "a slow or busy server may need a longer timeout.",
                **kept,
            ).coded("timed_out", host=host, model=model, seconds=self.timeout)
        if mid_stream:
            return StreamInterrupted(
                f"The connection to {host} broke while model {model!r} was replying; the "
                f"{len(partial_text)} characters received are kept. Try again.",
                **kept,
            ).coded("stream_broken", host=host, model=model, chars=len(partial_text))
        cause = self._cause(exc)
        return ConnectionFailed(
            f"Could not connect to {host}{cause} — is the server running? "
            f"Check the base URL {self.base_url}.",
            **kept,
        ).coded("connection_failed", host=host, cause=cause, base_url=self.base_url)

    def cut_error(
        self,
        reason: Literal["size", "time"],
        model: str,
        partial_text: str,
        *,
        detail: str = "",
        reply_cap: int | None = None,
        mid_stream: bool = True,
    ) -> BackendError:
        """The error for a reply whose reading stopped at a bound (`partial_text` is kept)."""
        host = self.host
        if not mid_stream:
            return BadResponse(
                f"{host} sent {detail or 'too much'} for model {model!r}; reading stopped.",
                partial_text=partial_text,
            )
        kept = f"reading stopped and the {len(partial_text):,} characters received are kept"
        chars = len(partial_text)
        if reason == "time":
            return ReplyTimeLimit(
                f"The reply of model {model!r} from {host} was still going after "
                f"{self.reply_time_limit_s:g} s, the time limit for one reply (REPLY_TIME_LIMIT_S); "
                f"{kept}.",
                partial_text=partial_text,
            ).coded("reply_time_limit", model=model, host=host, seconds=self.reply_time_limit_s, chars=chars)
        if detail:
            return ReplyTooLong(
                f"The reply of model {model!r} from {host} sent {detail}; {kept}.", partial_text=partial_text
            )
        limit = reply_size_limit(reply_cap)
        cap = f"a reply cap of {reply_cap:,} tokens" if reply_cap is not None else "no reply cap"
        what = (
            f"passed {limit:,} bytes, the most a reply with {cap} may hold "
            f"({REPLY_BYTES_PER_TOKEN} bytes a token plus {REPLY_BYTES_MARGIN // 1024} KiB)"
        )
        return ReplyTooLong(
            f"The reply of model {model!r} from {host} {what}; {kept}.", partial_text=partial_text
        ).coded("reply_too_long", model=model, host=host, limit=limit, chars=chars)

    def status_error(self, answer: ServerAnswer, model: str, *, partial_text: str = "") -> BackendError:
        """The typed error for an HTTP status that is not a reply, with the data it carries."""
        host, status = self.host, answer.status
        server_said = self._server_message(answer.body)
        said = f" Server says: {server_said}." if server_said else ""
        request_id = answer.request_id if self.quote_server_text else None
        kept: dict[str, Any] = {"partial_text": partial_text, "status_code": status, "request_id": request_id}
        if 300 <= status < 400:
            location = answer.headers.get("location", "")
            to = f" to {self._scrub(location[:200])!r}" if self.quote_server_text and location else ""
            return BackendError(
                f"{host} answered model {model!r} with a redirect (HTTP {status}){to}; redirects are "
                "not followed. Use the address it redirects to as the base URL.",
                **kept,
            )
        fields = {
            "host": host,
            "model": model,
            "status": status,
            "base_url": self.base_url,
            "server_said": server_said,
        }
        if status == 401:
            return AuthenticationFailed(
                f"{host} rejected the API key (HTTP 401) for model {model!r}.{said} "
                "Check the key (or OPENAI_API_KEY).",
                **kept,
            ).coded("auth_failed", **fields)
        if status == 403:
            return PermissionDenied(
                f"{host} does not let this API key use model {model!r} (HTTP 403).{said} "
                "Choose a model the key may use, or a key with access to it.",
                **kept,
            ).coded("permission_denied", **fields)
        if status == 404:
            return ModelNotFound(
                f"{host} does not know model {model!r} (HTTP 404).{said} Check the model name; "
                f"the base URL {self.base_url} may also be wrong.",
                **kept,
            ).coded("model_not_found", **fields)
        if status in (400, 413, 422):
            return BadRequest(
                f"{host} refused the request for model {model!r} (HTTP {status}).{said} "
                "An option may not be supported by this server or model.",
                **kept,
            ).coded("bad_request", **fields)
        retry_after = parse_retry_after(answer.headers)
        if status == 429:
            seconds = math.ceil(retry_after) if retry_after is not None else 0
            no_quota = answer.error_code == "insufficient_quota"
            if no_quota:
                when, code = "No quota is left: check the account's plan and billing.", "no_quota"
            elif retry_after is not None and seconds > 0:
                when, code = (
                    f"Try again in {seconds} second{'s' if seconds != 1 else ''}.",
                    "rate_limited_wait",
                )
            elif retry_after is not None:
                when, code = "Try again now.", "rate_limited_now"
            else:
                when, code = "Wait a little and try again.", "rate_limited"
            return RateLimited(
                f"{host} is rate-limiting requests for model {model!r} (HTTP 429).{said} {when}",
                retry_after=retry_after,
                retryable=not no_quota,
                **kept,
            ).coded(code, seconds=seconds, **fields)
        if status == 529:
            return Overloaded(
                f"{host} is overloaded (HTTP 529) and could not serve model {model!r}.{said} "
                "Try again in a little while.",
                retry_after=retry_after,
                **kept,
            ).coded("overloaded", **fields)
        if status >= 500:
            return ServerError(
                f"{host} failed with HTTP {status} for model {model!r}.{said} "
                "The problem is on the server's side; try again later.",
                **kept,
            ).coded("server_error", **fields)
        return BackendError(f"{host} answered HTTP {status} for model {model!r}.{said}", **kept).coded(
            "http_status", **fields
        )

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self._api_key)

    def _server_says(self, body: object) -> str:
        """' Server says: …' with the server's own (scrubbed) message, or '' when it gave none
        (or when this backend does not quote its server)."""
        text = self._server_message(body)
        return f" Server says: {text}." if text else ""

    def _server_message(self, body: object) -> str:
        """The server's own message in an error body or event (`{"message"}`, or Anthropic's
        `{"error": {"message"}}`), scrubbed and shortened; '' when there is none or it may not
        be quoted. An HTML page is not quoted."""
        if not self.quote_server_text:
            return ""
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            body = body["error"]
        message = body.get("message") if isinstance(body, Mapping) else body
        if not isinstance(message, str) or not message.strip() or message.lstrip().startswith("<"):
            return ""
        text = " ".join(self._scrub(message).split())
        if len(text) > _SERVER_MESSAGE_CHARS:
            text = text[: _SERVER_MESSAGE_CHARS - 1] + "…"
        return text.rstrip(". ")

    def _cause(self, exc: BaseException) -> str:
        cause = exc.__cause__
        return f" ({self._scrub(str(cause))})" if cause is not None and str(cause) else ""


class BoundedReplyStream(ReplyStream):
    """One reply of an `HttpChatBackend`, read within its bounds: reading stops (raising
    `ReplyTooLong` / `ReplyTimeLimit` with the text so far, and setting `cut_reason`) once the
    text passes `size_limit` bytes (by default the reply cap's) or the clock passes `deadline`."""

    def __init__(
        self,
        backend: HttpChatBackend,
        model: str,
        *,
        reply_cap: int | None = None,
        deadline: float | None = None,
        size_limit: int | None = None,
    ) -> None:
        super().__init__()
        self._backend = backend
        self._model = model
        self._reply_cap = reply_cap
        self._deadline = deadline
        self._size_limit = size_limit if size_limit is not None else reply_size_limit(reply_cap)
        self._size = 0

    def _within_size(self, text: str) -> Iterator[str]:
        """`text`, or as much of it as fits the size limit and then the cut."""
        encoded = text.encode("utf-8", "surrogatepass")
        if self._size + len(encoded) > self._size_limit:
            if head := encoded[: self._size_limit - self._size].decode("utf-8", "ignore"):
                yield head
            raise self._cut("size")
        self._size += len(encoded)
        yield text

    def _check_time(self) -> None:
        if self._deadline is not None and self._backend._clock() > self._deadline:
            raise self._cut("time")

    def _cut(self, reason: Literal["size", "time"], detail: str = "") -> BackendError:
        self.cut_reason = reason
        return self._backend.cut_error(
            reason, self._model, self.text, detail=detail, reply_cap=self._reply_cap
        )

    def _failed(self, exc: Exception) -> BackendError:
        """The error for an SDK error while reading (the text so far kept)."""
        if isinstance(exc, ResponseCut):
            return self._cut(exc.reason, exc.detail if exc.reason == "size" else "")
        return self._backend.error_for(exc, self._model, partial_text=self.text, mid_stream=True)

    def _not_the_api(self, exc: Exception, advice: str = "") -> BadResponse:
        """The error for a chunk or event that does not follow the API (the text so far kept)."""
        backend = self._backend
        return BadResponse(
            f"{backend.host} sent a reply chunk for model {self._model!r} that is not "
            f"{backend.api_name} ({type(exc).__name__}); the text received so far is kept.{advice}",
            partial_text=self.text,
        )

    def _unfinished(self) -> StreamInterrupted:
        return StreamInterrupted(
            f"The reply of model {self._model!r} from {self._backend.host} ended before the server "
            f"said it was finished; the {len(self.text)} characters received are kept. Try again.",
            partial_text=self.text,
        )

    def _take_usage(self, usage: Callable[[], Usage]) -> None:
        """Keep the usage `usage()` makes of the server's report; leave it out when not plausible."""
        try:
            self.usage = usage()
        except (ValidationError, ValueError, AttributeError, TypeError):
            self.usage = None
            self.usage_note = (
                f"{self._backend.host} reported token usage that is not plausible; it is left out "
                "and the local counts stand in for it."
            )


# --- The OpenAI-compatible backend -----------------------------------------------------------


class _HttpClient(openai.DefaultHttpxClient):
    """The SDK's default HTTP client settings, closed when garbage-collected (as the SDK's own)."""

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                self.close()


class OpenAIBackend(HttpChatBackend):
    """Streams replies from OpenAI or any server that speaks its Chat Completions API
    (Ollama, vLLM, LM Studio, llama.cpp, ...), through the official `openai` SDK.

    `api_key` and `base_url` left as None fall back to the SDK's `OPENAI_API_KEY` and
    `OPENAI_BASE_URL` environment variables (and api.openai.com). `timeout` bounds connecting and
    each wait for data, not the whole reply, so a long reply that keeps streaming never times out.

    Retries are the SDK's own, at most `max_retries` (default 2) after the first attempt, and
    only before any reply text arrives: the SDK retries connection errors, timeouts, 408, 409,
    429 and 5xx (and obeys a server's `x-should-retry`), waiting 0.5 s, 1 s, 2 s, ... (at most
    8 s, minus up to 25% jitter) or what `Retry-After`/`retry-after-ms` asks (a server asking for
    more than 2 minutes is not retried). A reply that breaks off mid-stream is never retried:
    the caller sees `partial_text`.

    Servers that reject `stream_options` get the request again without it, once; this backend
    then stops sending it, and such servers' replies have no usage (`usage` stays None).

    Every failure raises a `core.errors.BackendError` subclass whose message names the server
    and model and never contains the API key. Bounds and errors are `HttpChatBackend`'s; a
    server's usage report that is not plausible is left out (`usage_note` says so), never
    turning a good reply into a failed one.

    For a base URL a visitor typed:

    - `isolated`: nothing comes from the deployer's environment: no OPENAI_ORG_ID,
      OPENAI_PROJECT_ID, OPENAI_ADMIN_KEY or OPENAI_CUSTOM_HEADERS; only the SDK's own headers
      and `api_key` (which must be given, as must `base_url`) are sent. `organization` and
      `project` are sent only when given.
    - `public_addresses_only` (implies `isolated`): every connection goes only to public addresses
      (`core.policy.netguard`; `network_backend` replaces its resolver in tests), proxies from the
      environment are not used, and compressed bodies are not inflated.
    - `quote_server_text=False`: errors carry a status line and a generic message only, never the
      server's text, content type or request id, and every failure to get an answer reads the same
      ("could not reach the server"), whether the port was closed, filtered or not HTTP.
    """

    sdk_errors = SdkErrors.of(openai, OpenAIResponseCut)
    api_name = "OpenAI-compatible"
    _client: openai.OpenAI

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        isolated: bool = False,
        organization: str | None = None,
        project: str | None = None,
        public_addresses_only: bool = False,
        quote_server_text: bool = True,
        reply_time_limit_s: float | None = DEFAULT_REPLY_TIME_LIMIT_S,
        network_backend: httpcore2.NetworkBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            api_key=api_key,
            timeout=timeout,
            quote_server_text=quote_server_text,
            reply_time_limit_s=reply_time_limit_s,
            clock=clock,
        )
        isolated = isolated or public_addresses_only
        if isolated and (api_key is None or base_url is None):
            raise BackendError("A client for a typed base URL needs its key and URL given explicitly.")
        http_client = _HttpClient(
            **self._http_client_options(
                public_addresses_only=public_addresses_only,
                network_backend=network_backend,
                request_hooks=[_only_sdk_headers(f"Bearer {api_key}")] if isolated else [],
            )
        )
        # Explicit empty values, so the SDK does not read them from the environment.
        from_environment = "" if isolated else None
        try:
            self._client = openai.OpenAI(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=max_retries,
                organization=organization if organization is not None else from_environment,
                project=project if project is not None else from_environment,
                admin_api_key=from_environment,
                webhook_secret=from_environment,
                http_client=http_client,
            )
        except openai.OpenAIError as exc:
            http_client.close()
            if "credentials" in str(exc).lower():
                raise AuthenticationFailed(
                    "No API key: enter one or set OPENAI_API_KEY. A local server that needs no key "
                    "(Ollama, LM Studio, ...) accepts any placeholder, e.g. 'local'."
                ).coded("no_api_key") from None
            raise BackendError(
                f"Cannot set up the OpenAI client: {scrub_secrets(str(exc), api_key)}"
            ) from None
        if isolated:
            # None, not "": no header at all. Custom headers came from OPENAI_CUSTOM_HEADERS.
            self._client.organization = organization
            self._client.project = project
            self._client.admin_api_key = None
            self._client.webhook_secret = None
            self._client._custom_headers = {}
        self._api_key = self._client.api_key  # the SDK's, when it came from OPENAI_API_KEY
        self.max_retries = max_retries
        self.isolated = isolated
        self.public_addresses_only = public_addresses_only
        self._send_stream_options = True

    def _make_tokenize_client(self) -> TokenizeClient:
        """The tokenize endpoints of this server (vLLM, llama.cpp), on this backend's HTTP client."""
        return TokenizeClient(self._client)

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r})"
        )

    def request_params(self, request: ChatRequest) -> dict[str, Any]:
        """The keyword arguments `stream()` passes to `client.chat.completions.create`."""
        params: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            **request.sampling.model_dump(exclude_none=True),
        }
        if self._send_stream_options:
            params["stream_options"] = {"include_usage": True}
        if request.max_reply_tokens is not None:
            # OpenAI's reasoning models reject max_tokens; Ollama, vLLM, LM Studio and
            # llama.cpp only understand max_tokens.
            cap = "max_completion_tokens" if uses_max_completion_tokens(request.model) else "max_tokens"
            params[cap] = request.max_reply_tokens
        return params

    def stream(self, request: ChatRequest) -> OpenAIReplyStream:
        """Send `request`; raises a `BackendError` if the server refuses it or cannot be reached."""
        # The SDK walks every message against its TypedDict schemas before it sends anything
        # (about 25 ms at 200 messages, with the interpreter held). The messages are plain
        # wire-format dicts already: they go in `extra_body`, which the SDK merges into the JSON
        # after that walk, in the same place (the bytes sent are the same).
        params = self.request_params(request)
        params = {**params, "messages": [], "extra_body": {"messages": params["messages"]}}
        started = self._clock()
        try:
            try:
                sdk_stream = self._client.chat.completions.create(**params)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if "stream_options" not in params or "stream_options" not in str(exc.body):
                    raise
                self._send_stream_options = False
                del params["stream_options"]
                sdk_stream = self._client.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            # `from None`: the SDK error carries the request (Authorization header included)
            # and unscrubbed server text, which a printed traceback would show.
            raise self.error_for(exc, request.model) from None
        content_type = sdk_stream.response.headers.get("content-type", "")
        if content_type and "event-stream" not in content_type:
            raise self._not_a_stream(sdk_stream, request.model, content_type)
        return OpenAIReplyStream(
            self,
            request.model,
            sdk_stream,
            reply_cap=request.max_reply_tokens,
            deadline=self.reply_deadline(started),
        )

    def _not_a_stream(
        self, sdk_stream: Stream[ChatCompletionChunk], model: str, content_type: str
    ) -> BadResponse:
        advice = f"Check that the base URL {self.base_url} points at an OpenAI-compatible API."
        if not self.quote_server_text:
            sdk_stream.close()
            return BadResponse(f"{self.host} answered model {model!r} with no event stream. {advice}")
        head = b""
        # The body is only quoted as a hint: read its start, never all of it.
        with contextlib.suppress(Exception):
            for piece in sdk_stream.response.iter_bytes():
                head += piece
                if len(head) >= 4096:
                    break
        sdk_stream.close()
        snippet = " ".join(head.decode("utf-8", "replace").split())[:120]
        return BadResponse(
            f"{self.host} answered model {model!r} with {content_type.split(';')[0]}, "
            f"not an event stream: {self._scrub(snippet)!r}. {advice}"
        )

    def _answer(self, exc: Exception) -> ServerAnswer | None:
        if not isinstance(exc, openai.APIStatusError):
            return None
        return ServerAnswer(exc.status_code, exc.response.headers, exc.body, exc.request_id, exc.code)


class OpenAIReplyStream(BoundedReplyStream):
    """One streamed reply from an `OpenAIBackend`; see `BoundedReplyStream`."""

    def __init__(
        self,
        backend: OpenAIBackend,
        model: str,
        sdk_stream: Stream[ChatCompletionChunk],
        *,
        size_limit: int | None = None,
        reply_cap: int | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__(backend, model, reply_cap=reply_cap, deadline=deadline, size_limit=size_limit)
        self._sdk_stream = sdk_stream

    def close(self) -> None:
        self._sdk_stream.close()

    def _chunks(self) -> Iterator[str]:
        try:
            for chunk in self._sdk_stream:
                if (
                    usage := chunk.usage
                ) is not None:  # the final chunk (some servers send it on every chunk)
                    self._take_usage(
                        lambda: Usage(
                            prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            cached_prompt_tokens=cached_tokens_reported(usage),
                        )
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    text = (delta.content or delta.refusal) if delta is not None else None
                    if choice.finish_reason:
                        # As the server said it, but bounded: it is recorded with the turn.
                        self.finish_reason = str(choice.finish_reason)[:_FINISH_REASON_CHARS]
                    if text:
                        yield from self._within_size(text)
                self._check_time()
        except openai.APIConnectionError as exc:
            if self.finish_reason is not None and not isinstance(exc, openai.APITimeoutError):
                return  # the reply was complete; only the usage chunk was lost
            raise self._failed(exc) from None
        except openai.OpenAIError as exc:
            raise self._failed(exc) from None
        except (ValueError, TypeError, AttributeError) as exc:
            # json.JSONDecodeError for a `data:` line that is not JSON, or a chunk of the wrong shape
            advice = f" Check that the base URL {self._backend.base_url} points at an OpenAI-compatible API."
            raise self._not_the_api(exc, advice) from None
        finally:
            self._sdk_stream.close()
        if self.finish_reason is None:
            raise self._unfinished()


# --- the provider ----------------------------------------------------------------------------

#: Local OpenAI-compatible servers (Ollama, vLLM, LM Studio, llama.cpp) accept any key; the SDK
#: insists on one.
KEYLESS_PLACEHOLDER = "not-needed"


class OpenAICompatible:
    """OpenAI, and every server that speaks its Chat Completions API: any connection with a key
    or a base URL (registered last, it serves what no other provider claims)."""

    name = "openai"

    def handles(self, connection: Connection) -> bool:
        return not connection.offline

    def backend(
        self, connection: Connection, *, offline_chunk_delay_s: float = 0.0, language: Language = "en"
    ) -> ChatBackend:
        return OpenAIBackend(
            api_key=connection.api_key or KEYLESS_PLACEHOLDER,
            base_url=connection.base_url,
            timeout=connection.timeout_s,
            max_retries=connection.max_retries,
            isolated=connection.base_url_typed,
            organization=connection.organization,
            project=connection.project,
            public_addresses_only=connection.public_addresses_only,
            quote_server_text=connection.quote_server_text,
            reply_time_limit_s=connection.reply_time_limit_s or None,
        )


register(OpenAICompatible())
