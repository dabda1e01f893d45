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
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import openai
from openai import Stream
from openai.types.chat import ChatCompletionChunk
from pydantic import BaseModel, Field

from core.errors import (
    AuthenticationFailed,
    BackendError,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
)
from core.settings import Sampling


class Usage(BaseModel):
    """Token usage as the server reported it."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


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

    def _chunks(self) -> Iterator[str]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks():
            self.text += chunk
            yield chunk

    def close(self) -> None:
        """Stop reading (e.g. the user pressed stop) and release the connection, if any."""


class ChatBackend(Protocol):
    """Anything that can stream a reply: the OpenAI-compatible backend and the offline model."""

    #: True when usage comes from a real server's report, False when it is computed locally.
    reports_server_usage: bool

    def stream(self, request: ChatRequest) -> ReplyStream: ...


# --- The OpenAI-compatible backend -----------------------------------------------------------

#: Model families that take `max_completion_tokens` (their `max_tokens` is rejected by OpenAI).
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")

# An OpenAI-style key, or a masked echo of any key ("sk-proj-****abcd", "abcd********wxyz").
_SECRET_PATTERN = re.compile(r"\bsk-[\w\-*]{4,}|[\w\-]*\*{3,}[\w\-*]*")
_SERVER_MESSAGE_CHARS = 300


def uses_max_completion_tokens(model: str) -> bool:
    """True for OpenAI reasoning-family models, whose reply cap is sent as `max_completion_tokens`."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/o3-mini" on routers such as OpenRouter
    return name.startswith(REASONING_MODEL_PREFIXES)


def scrub_secrets(text: str, api_key: str | None = None) -> str:
    """`text` with `api_key`, anything shaped like an `sk-…` key and masked keys removed."""
    if api_key:
        text = text.replace(api_key, "[redacted]")
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


class OpenAIBackend:
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
    and model and never contains the API key.
    """

    reports_server_usage = True

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        try:
            self._client = openai.OpenAI(
                api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
            )
        except openai.OpenAIError as exc:
            if "credentials" in str(exc).lower():
                raise AuthenticationFailed(
                    "No API key: enter one or set OPENAI_API_KEY. A local server that needs no key "
                    "(Ollama, LM Studio, ...) accepts any placeholder, e.g. 'local'."
                ) from None
            raise BackendError(
                f"Cannot set up the OpenAI client: {scrub_secrets(str(exc), api_key)}"
            ) from None
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._send_stream_options = True

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
        params = self.request_params(request)
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
            snippet = ""
            with contextlib.suppress(Exception):  # the body is only quoted as a hint
                snippet = " ".join(sdk_stream.response.read().decode("utf-8", "replace").split())[:120]
            sdk_stream.close()
            raise BadResponse(
                f"{self.host} answered model {request.model!r} with {content_type.split(';')[0]}, "
                f"not an event stream: {scrub_secrets(snippet, self._client.api_key)!r}. Check that "
                f"the base URL {self.base_url} points at an OpenAI-compatible API."
            )
        return OpenAIReplyStream(self, request.model, sdk_stream)

    def error_for(
        self, exc: openai.OpenAIError, model: str, *, partial_text: str = "", mid_stream: bool = False
    ) -> BackendError:
        """The `BackendError` for an SDK error, at `create()` or (`mid_stream`) while iterating."""
        host = self.host
        kept: dict[str, Any] = {"partial_text": partial_text}
        said = self._server_says(exc)
        if isinstance(exc, openai.APITimeoutError):
            if mid_stream:
                return RequestTimedOut(
                    f"{host} stopped sending the reply of model {model!r} for over {self.timeout:g} s; "
                    "the text received so far is kept. Try again.",
                    **kept,
                )
            return RequestTimedOut(
                f"{host} did not answer within {self.timeout:g} s (model {model!r}). Try again; "
                "a slow or busy server may need a longer timeout.",
                **kept,
            )
        if isinstance(exc, openai.APIConnectionError):
            if mid_stream:
                return StreamInterrupted(
                    f"The connection to {host} broke while model {model!r} was replying; the "
                    f"{len(partial_text)} characters received are kept. Try again.",
                    **kept,
                )
            return ConnectionFailed(
                f"Could not connect to {host}{self._cause(exc)} — is the server running? "
                f"Check the base URL {self.base_url}.",
                **kept,
            )
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, model, said, kept)
        if isinstance(exc, openai.APIResponseValidationError):
            return BadResponse(
                f"{host} sent a reply for model {model!r} that is not OpenAI-compatible.{said}", **kept
            )
        if isinstance(exc, openai.APIError):
            # e.g. an `error` event in the middle of a stream
            return BackendError(f"{host} reported an error for model {model!r}.{said}", **kept)
        return BackendError(f"Request to {host} for model {model!r} failed: {self._scrub(str(exc))}", **kept)

    def _status_error(
        self, exc: openai.APIStatusError, model: str, said: str, kept: dict[str, Any]
    ) -> BackendError:
        host, status = self.host, exc.status_code
        kept = {**kept, "status_code": status, "request_id": exc.request_id}
        if status == 401:
            return AuthenticationFailed(
                f"{host} rejected the API key (HTTP 401) for model {model!r}.{said} "
                "Check the key (or OPENAI_API_KEY).",
                **kept,
            )
        if status == 403:
            return PermissionDenied(
                f"{host} does not let this API key use model {model!r} (HTTP 403).{said} "
                "Choose a model the key may use, or a key with access to it.",
                **kept,
            )
        if status == 404:
            return ModelNotFound(
                f"{host} does not know model {model!r} (HTTP 404).{said} Check the model name; "
                f"the base URL {self.base_url} may also be wrong.",
                **kept,
            )
        if status in (400, 422):
            return BadRequest(
                f"{host} refused the request for model {model!r} (HTTP {status}).{said} "
                "An option may not be supported by this server or model.",
                **kept,
            )
        if status == 429:
            retry_after = parse_retry_after(exc.response.headers)
            if exc.code == "insufficient_quota":
                when = "No quota is left: check the account's plan and billing."
            elif retry_after is not None and (seconds := math.ceil(retry_after)) > 0:
                when = f"Try again in {seconds} second{'s' if seconds != 1 else ''}."
            elif retry_after is not None:
                when = "Try again now."
            else:
                when = "Wait a little and try again."
            return RateLimited(
                f"{host} is rate-limiting requests for model {model!r} (HTTP 429).{said} {when}",
                retry_after=retry_after,
                retryable=exc.code != "insufficient_quota",
                **kept,
            )
        if status >= 500:
            return ServerError(
                f"{host} failed with HTTP {status} for model {model!r}.{said} "
                "The problem is on the server's side; try again later.",
                **kept,
            )
        return BackendError(f"{host} answered HTTP {status} for model {model!r}.{said}", **kept)

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self._client.api_key)

    def _server_says(self, exc: openai.OpenAIError) -> str:
        """' Server says: …' with the server's own (scrubbed) message, or '' when it gave none."""
        message: object = None
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            if isinstance(body, Mapping):
                message = body.get("message")
            elif isinstance(body, str) and not body.lstrip().startswith("<"):  # skip HTML pages
                message = body
        elif isinstance(exc, openai.APIError):
            message = exc.message
        if not isinstance(message, str) or not message.strip():
            return ""
        text = " ".join(self._scrub(message).split())
        if len(text) > _SERVER_MESSAGE_CHARS:
            text = text[: _SERVER_MESSAGE_CHARS - 1] + "…"
        return f" Server says: {text.rstrip('. ')}."

    def _cause(self, exc: BaseException) -> str:
        cause = exc.__cause__
        return f" ({self._scrub(str(cause))})" if cause is not None and str(cause) else ""


class OpenAIReplyStream(ReplyStream):
    """One streamed reply from an `OpenAIBackend`; see `ReplyStream`."""

    def __init__(self, backend: OpenAIBackend, model: str, sdk_stream: Stream[ChatCompletionChunk]) -> None:
        super().__init__()
        self._backend = backend
        self._model = model
        self._sdk_stream = sdk_stream

    def close(self) -> None:
        self._sdk_stream.close()

    def _chunks(self) -> Iterator[str]:
        backend, model = self._backend, self._model
        try:
            for chunk in self._sdk_stream:
                if chunk.usage is not None:  # the final chunk (some servers send it on every chunk)
                    self.usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    text = (delta.content or delta.refusal) if delta is not None else None
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                    if text:
                        yield text
        except openai.APIConnectionError as exc:
            if self.finish_reason is not None and not isinstance(exc, openai.APITimeoutError):
                return  # the reply was complete; only the usage chunk was lost
            raise backend.error_for(exc, model, partial_text=self.text, mid_stream=True) from None
        except openai.OpenAIError as exc:
            raise backend.error_for(exc, model, partial_text=self.text, mid_stream=True) from None
        except (ValueError, TypeError, AttributeError) as exc:
            # json.JSONDecodeError for a `data:` line that is not JSON, or a chunk of the wrong shape
            raise BadResponse(
                f"{backend.host} sent a reply chunk for model {model!r} that is not OpenAI-compatible "
                f"({type(exc).__name__}); the text received so far is kept. Check that the base URL "
                f"{backend.base_url} points at an OpenAI-compatible API.",
                partial_text=self.text,
            ) from None
        finally:
            self._sdk_stream.close()
        if self.finish_reason is None:
            raise StreamInterrupted(
                f"The reply of model {model!r} from {backend.host} ended before the server said it "
                f"was finished; the {len(self.text)} characters received are kept. Try again.",
                partial_text=self.text,
            )
