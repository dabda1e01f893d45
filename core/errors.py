"""Every error the core raises, as one hierarchy a UI can catch by kind.

Messages are written for the person using the app: they say what went wrong and what to do,
and never contain an API key. Each error also carries a `code` and its `fields`: the page shows
`error.<code>` from core/locales with those fields, in its own language; str(error) is the English
sentence (logs, tests, and any error not given a code yet, code "generic").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

from core.notices import Notice


class DashboardError(Exception):
    """Base class of every error raised by `core`."""

    #: The catalog key's last part: the page shows `error.<code>` formatted with `fields`.
    code: str = "generic"

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.fields: dict[str, Any] = {}

    def coded(self, code: str, **fields: Any) -> Self:
        """This error with the code and fields of its translated text (`raise X(...).coded(...)`)."""
        self.code = code
        self.fields = fields
        return self


class ConfigError(DashboardError):
    """A deployer's setting (environment variable, secret, file) is malformed.

    `setting` names it as the deployer wrote it (e.g. "OPENAI_TIMEOUT_S"), so the message can be acted on.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


# --- Tokenizer -----------------------------------------------------------------------------


class TokenizerDataError(DashboardError):
    """The bundled BPE ranks are missing or do not match tiktoken's expected sha256."""


# --- Conversation --------------------------------------------------------------------------


class PromptTooLong(DashboardError, ValueError):
    """What must be sent exceeds the context budget: the system prompt, the newest user message
    and any pinned messages, which no policy takes out.

    The user's text stays in the conversation (pending, not sent) and is also kept here.
    `pinned_tokens` is the share of `prompt_tokens` held by pinned messages.
    """

    def __init__(self, *, text: str, prompt_tokens: int, budget: int, pinned_tokens: int = 0) -> None:
        self.text = text
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        self.pinned_tokens = pinned_tokens
        self.overflow = prompt_tokens - budget
        what = "The system prompt and your message"
        advice = "Shorten the message or raise the context budget"
        if pinned_tokens:
            what = f"The system prompt, your message and the pinned messages ({pinned_tokens} tokens)"
            advice = "Unpin a message, shorten yours or raise the context budget"
        super().__init__(
            f"{what} need {prompt_tokens} prompt tokens, {self.overflow} more than the context budget "
            f"of {budget}. {advice}; your text was not sent and is kept."
        )
        self.coded(
            "prompt_too_long_pinned" if pinned_tokens else "prompt_too_long",
            tokens=prompt_tokens,
            overflow=self.overflow,
            budget=budget,
            pinned=pinned_tokens,
        )


class ConversationStateError(DashboardError, ValueError):
    """A call that does not fit the conversation's current state (e.g. a reply with no question)."""


class InvalidSettings(DashboardError, ValueError):
    """A setting the user chose is out of range (a model name too long, a budget too large); the
    conversation keeps its previous settings."""


class TooManyPersonas(DashboardError):
    """A workspace already holds the most personas it may; nothing was saved."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This workspace already holds {limit} personas, the most it may; "
            "delete one before adding another."
        )
        self.coded("too_many_personas", limit=limit)


class ReplayTooLarge(DashboardError):
    """A conversation too long to replay here (the replay would take the server's time from every
    other visitor); nothing was replayed."""

    def __init__(self, messages: int, limit: int) -> None:
        super().__init__(
            f"This conversation has {messages:,} messages; a what-if replay takes at most {limit:,}."
        )
        self.coded("replay_too_large", messages=messages, limit=limit)


class ConversationImportError(DashboardError, ValueError):
    """An imported conversation file was rejected; the current conversation is untouched."""


class TestSetError(DashboardError, ValueError):
    """A test set's prompts could not be read. `reason` says why ("too_large", "not_utf8",
    "invalid"); `fields` carry what a translated message needs (`file`, `limit`, `problem`)."""

    __test__ = False  # not a pytest class, whatever its name
    _MESSAGES: ClassVar[dict[str, str]] = {
        "too_large": "{file} is larger than {limit:,} bytes.",
        "not_utf8": "{file} is not UTF-8 text.",
        "invalid": "{file} holds no usable prompts: {problem}",
    }

    def __init__(self, reason: str, **fields: str | int | Notice | list[Notice]) -> None:
        self.reason = reason
        super().__init__(
            self._MESSAGES[reason].format(**{name: _english(value) for name, value in fields.items()})
        )
        self.coded(
            "test_set_too_large"
            if reason == "too_large"
            else "test_set_not_utf8"
            if reason == "not_utf8"
            else "test_set_invalid",
            **fields,
        )


# --- Backends ------------------------------------------------------------------------------


class BackendError(DashboardError):
    """A model call failed, with what is known about it (in the style of openai's `APIStatusError`).

    - `partial_text`: whatever reply text streamed before the failure (kept, marked interrupted);
    - `status_code`: the HTTP status when the server answered with one, else None;
    - `request_id`: the server's `x-request-id`, for a support ticket, when it sent one;
    - `retry_after`: seconds the server asked to wait, when it said;
    - `retryable`: whether sending the same request again can help (a bad key will not).
    """

    #: The default of `retryable` for the class; an instance may know better (e.g. no quota left).
    retryable_by_default: bool = False

    def __init__(
        self,
        message: str,
        *,
        partial_text: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.partial_text = partial_text
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.retryable = self.retryable_by_default if retryable is None else retryable


class AuthenticationFailed(BackendError):
    """401: the server rejected the API key."""


class PermissionDenied(BackendError):
    """403: the key is valid but may not use this model or endpoint."""


class ModelNotFound(BackendError):
    """404: the server does not know this model (or the base URL is wrong)."""


class BadRequest(BackendError):
    """400/422: the server refused the request itself (e.g. an unsupported option)."""


class RateLimited(BackendError):
    """429: too many requests or no quota left.

    `retry_after` is in seconds when the server said (`Retry-After`, seconds or an HTTP date), else None.
    """

    retryable_by_default = True


class ServerError(BackendError):
    """5xx: the server failed; trying again later may work."""

    retryable_by_default = True


class Overloaded(ServerError):
    """529: the provider is overloaded (Anthropic); trying again in a little while may work."""


class RequestTimedOut(BackendError):
    """The server did not answer in time, or stalled mid-reply for longer than the timeout."""

    retryable_by_default = True


class ConnectionFailed(BackendError):
    """The server could not be reached (refused, DNS, TLS); nothing was sent or received."""

    retryable_by_default = True


class StreamInterrupted(BackendError):
    """The reply stream ended (or its connection broke) before the server said it was finished.

    `partial_text` keeps what had arrived.
    """

    retryable_by_default = True


class EmptyReply(BackendError):
    """The server finished a reply without any text; nothing is recorded and the question stays pending.

    `finish_reason` says why it ended ("length": a reasoning model spent the whole reply cap thinking).
    """

    retryable_by_default = True

    def __init__(self, message: str, *, finish_reason: str | None = None) -> None:
        super().__init__(message)
        self.finish_reason = finish_reason


class BadResponse(BackendError):
    """The server answered with something that is not an OpenAI-compatible response.

    E.g. an HTML page where an event stream was expected (often a wrong base URL), or a chunk
    that is not JSON.
    """

    retryable_by_default = True


# --- Personas ------------------------------------------------------------------------------


#: What is wrong with a file: a notice the page words in its language (`notice.<code>`), or an
#: English sentence of no code yet.
Problem = str | Notice


class PersonaFileError(DashboardError):
    """One persona file (or the persona folder itself) could not be loaded; the other files still load.

    `file_name` is relative to the persona folder (e.g. "foodie.yaml"); `problems` says what is wrong,
    each with its line number when known. str() is "file: problem; problem" in English, so it reads
    on its own; the page words it from its code, `persona_file`.
    """

    def __init__(self, file_name: str, problems: Problem | Sequence[Problem]) -> None:
        self.file_name = file_name
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, str | Notice) else tuple(problems)
        )
        super().__init__(f"{file_name}: " + "; ".join(map(problem_english, self.problems)))
        self.coded("persona_file", file=file_name, problems=self.problems)


def _english(value: str | int | Notice | list[Notice]) -> str | int:
    """A field of an error in English (a notice worded, a list of them joined)."""
    if isinstance(value, list):
        return "; ".join(map(problem_english, value))
    return problem_english(value) if isinstance(value, Notice) else value


def problem_english(problem: Problem) -> str:
    """A problem in English (a notice worded from the English catalog)."""
    from core.i18n import english  # the catalogs: loaded only when an error carries a notice

    return problem if isinstance(problem, str) else english(problem)


class ReplyCut(BackendError):
    """Reading a reply stopped at one of the deployment's bounds; the text received is kept
    (`partial_text`) and recorded as interrupted. `cut_reason` says which bound: "size" or "time"."""

    cut_reason: str = ""


class ReplyTooLong(ReplyCut):
    """The reply passed the size limit derived from its reply cap (or one event was too large)."""

    cut_reason = "size"


class ReplyTimeLimit(ReplyCut):
    """The reply was still streaming when its total time limit (`REPLY_TIME_LIMIT_S`) ran out."""

    cut_reason = "time"


class AddressRefused(BackendError):
    """The base URL's host resolves to an address this deployment does not connect to
    (loopback, private, link-local, cloud metadata, ...): nothing was sent."""


# --- Deployment ----------------------------------------------------------------------------


class BaseUrlRefused(DashboardError):
    """A base URL the visitor typed is not allowed here (`ACCESS_MODE=private` and not in
    `ALLOWED_BASE_URLS`, or not an http(s) URL). `url` is what was typed."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class RateLimitedLocally(DashboardError):
    """This session sent more requests or tokens per minute than the deployment allows.

    `retry_after` is the seconds until the request fits (None when it never will: a single request
    larger than the whole per-minute token limit); `limit` names the setting that was hit.
    """

    def __init__(self, message: str, *, retry_after: float | None, limit: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit


class MessageTooLong(DashboardError, ValueError):
    """A message longer than the deployment allows (MAX_MESSAGE_CHARS); nothing was sent."""

    def __init__(self, *, length: int, limit: int) -> None:
        super().__init__(
            f"This message has {length:,} characters; this deployment takes at most {limit:,}. "
            "Shorten it and send it again."
        )
        self.length = length
        self.limit = limit
        self.coded("message_too_long", length=length, limit=limit)
