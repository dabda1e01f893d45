"""Every error the core raises, as one hierarchy a UI can catch by kind.

Messages are written for the person using the app: they say what went wrong and what to do,
and never contain an API key.
"""

from __future__ import annotations


class DashboardError(Exception):
    """Base class of every error raised by `core`."""


# --- Tokenizer -----------------------------------------------------------------------------


class TokenizerDataError(DashboardError):
    """The bundled BPE ranks are missing or do not match tiktoken's expected sha256."""


# --- Conversation --------------------------------------------------------------------------


class PromptTooLong(DashboardError, ValueError):
    """The system prompt plus the newest user message alone exceed the context budget.

    The user's text stays in the conversation (pending, not sent) and is also kept here.
    """

    def __init__(self, *, text: str, prompt_tokens: int, budget: int) -> None:
        self.text = text
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        self.overflow = prompt_tokens - budget
        super().__init__(
            f"The system prompt and your message need {prompt_tokens} prompt tokens, "
            f"{self.overflow} more than the context budget of {budget}. "
            "Shorten the message or raise the context budget; your text was not sent and is kept."
        )


class ConversationStateError(DashboardError, ValueError):
    """A call that does not fit the conversation's current state (e.g. a reply with no question)."""


class ConversationImportError(DashboardError, ValueError):
    """An imported conversation file was rejected; the current conversation is untouched."""


# --- Backends ------------------------------------------------------------------------------


class BackendError(DashboardError):
    """A model call failed. `partial_text` holds whatever reply text streamed before the failure."""

    retryable: bool = False

    def __init__(self, message: str, *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


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

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, partial_text: str = "") -> None:
        super().__init__(message, partial_text=partial_text)
        self.retry_after = retry_after


class ServerError(BackendError):
    """5xx: the server failed; trying again later may work."""

    retryable = True


class RequestTimedOut(BackendError):
    """The server did not answer in time, or stalled mid-reply for longer than the timeout."""

    retryable = True


class ConnectionFailed(BackendError):
    """The server could not be reached (refused, DNS, TLS); nothing was sent or received."""

    retryable = True


class StreamInterrupted(BackendError):
    """The reply stream ended (or its connection broke) before the server said it was finished.

    `partial_text` keeps what had arrived.
    """

    retryable = True


class BadResponse(BackendError):
    """The server answered with something that is not an OpenAI-compatible response.

    E.g. an HTML page where an event stream was expected (often a wrong base URL), or a chunk
    that is not JSON.
    """

    retryable = True


# --- Personas ------------------------------------------------------------------------------


class PersonaFileError(DashboardError):
    """One persona file (or the persona folder itself) could not be loaded; the other files still load.

    `file_name` is relative to the persona folder (e.g. "foodie.yaml"); `problems` says what is wrong,
    each with its line number when known. str() is "file: problem; problem", so it reads on its own.
    """

    def __init__(self, file_name: str, problems: str | list[str] | tuple[str, ...]) -> None:
        self.file_name = file_name
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__(f"{file_name}: " + "; ".join(self.problems))
