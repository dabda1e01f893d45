"""Asking an OpenAI-compatible server to count a prompt with the model's own tokenizer.

Two servers offer it, at the server root (the base URL without its `/v1`):

- vLLM: ``POST /tokenize`` with ``{"model", "messages", "add_generation_prompt": true}`` answers
  ``{"count", "max_model_len", "tokens"}``: the prompt exactly as a chat completion would
  render and tokenize it.
- llama.cpp's server: ``POST /apply-template`` with ``{"messages"}`` answers ``{"prompt"}`` (the
  chat template applied, generation prompt included), and ``POST /tokenize`` with
  ``{"content", "add_special": true, "parse_special": true}`` answers ``{"tokens": [...]}``, the
  tokens a completion of that prompt is given. ``GET /props`` tells its context size.

Ollama, LM Studio and hosted APIs have neither (their counts are calibrated instead, see
`core.counting.calibration`). Where a server reports its context window, it is read too: vLLM's
``GET /v1/models`` entries carry ``max_model_len``.

Every request goes through the chat backend's own HTTP client, so it carries the same key and
obeys the same rules: a base URL typed on a public deployment reaches only public addresses,
redirects are refused, a body is read to 1 MiB at most. Requests have a short timeout and are
not retried: a count that does not come promptly is estimated instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import openai

#: Which tokenize API a server offers.
TokenizeKind = Literal["vllm", "llama.cpp", "anthropic"]

DEFAULT_TIMEOUT_S: Final = 3.0
#: Answers that mean "there is no such endpoint here", not "try again later".
_ABSENT_STATUSES: Final = frozenset({400, 401, 403, 404, 405, 415, 422, 501})
MAX_TOKEN_COUNT: Final = 1_000_000_000


class TokenizeFailed(Exception):
    """The server did not count. `absent`: it has no such endpoint (or not for this model), which
    is worth remembering; otherwise it failed this time (timeout, 5xx, refused connection)."""

    def __init__(self, reason: str, *, absent: bool) -> None:
        super().__init__(reason)
        self.absent = absent


def server_root(base_url: str) -> str:
    """The base URL without a trailing `/v1`: where vLLM and llama.cpp serve /tokenize."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        raise TokenizeFailed(f"the answer's {what} is not a token count", absent=True)
    return value


class TokenizeClient:
    """The tokenize endpoints of the server behind one `openai.OpenAI` client."""

    #: The tokenize APIs this client may find, in the order they are probed.
    kinds: tuple[TokenizeKind, ...] = ("vllm", "llama.cpp")

    def __init__(self, client: openai.OpenAI, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = client.with_options(timeout=timeout_s, max_retries=0)
        self.root = server_root(str(client.base_url))

    # --- vLLM --------------------------------------------------------------------------------

    def count_vllm(self, model: str, messages: Sequence[Mapping[str, str]]) -> tuple[int, int | None]:
        """The prompt tokens of `messages` sent to `model`, and the model's context window."""
        body = {"model": model, "messages": list(messages), "add_generation_prompt": True}
        answer = self._request("post", f"{self.root}/tokenize", body)
        if not isinstance(answer, dict) or "count" not in answer:
            raise TokenizeFailed("the answer is not vLLM's", absent=True)
        window = answer.get("max_model_len")
        return _count(answer["count"], "count"), _count(window, "max_model_len") if window else None

    def context_window_vllm(self, model: str) -> int | None:
        """`max_model_len` of `model` in `GET /v1/models` (vLLM lists it), if any."""
        answer = self._request("get", "models", None)
        data = answer.get("data") if isinstance(answer, dict) else None
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model and entry.get("max_model_len"):
                return _count(entry["max_model_len"], "max_model_len")
        return None

    # --- llama.cpp ---------------------------------------------------------------------------

    def count_llamacpp(self, messages: Sequence[Mapping[str, str]]) -> int:
        """The prompt tokens of `messages` as llama.cpp's server renders and tokenizes them."""
        rendered = self._request("post", f"{self.root}/apply-template", {"messages": list(messages)})
        if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
            raise TokenizeFailed("the answer is not llama.cpp's", absent=True)
        body = {"content": rendered["prompt"], "add_special": True, "parse_special": True}
        answer = self._request("post", f"{self.root}/tokenize", body)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            raise TokenizeFailed("the answer is not llama.cpp's", absent=True)
        return len(tokens)

    def context_window_llamacpp(self) -> int | None:
        """The server's context size (`GET /props`: default_generation_settings.n_ctx)."""
        answer = self._request("get", f"{self.root}/props", None)
        settings = answer.get("default_generation_settings") if isinstance(answer, dict) else None
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        return _count(n_ctx, "n_ctx") if n_ctx else None

    def count_anthropic(self, model: str, messages: Sequence[Mapping[str, str]]) -> int:
        """Anthropic's `count_tokens` (`core.providers.anthropic_backend.AnthropicTokenCounter`); no other."""
        raise TokenizeFailed("not an Anthropic server", absent=True)

    # --- plumbing ----------------------------------------------------------------------------

    def _request(self, method: Literal["get", "post"], url: str, body: Any) -> Any:
        options: Any = {}
        try:
            if method == "get":
                return self._client.get(url, cast_to=object, options=options)
            return self._client.post(url, cast_to=object, body=body, options=options)
        except openai.APIStatusError as exc:
            status = exc.status_code
            raise TokenizeFailed(f"HTTP {status}", absent=status in _ABSENT_STATUSES) from None
        except openai.APIResponseValidationError:
            raise TokenizeFailed("the answer is not JSON", absent=True) from None
        except openai.OpenAIError as exc:
            # Timeouts, refused connections, a body over the bound: maybe better next time.
            raise TokenizeFailed(type(exc).__name__, absent=False) from None
        except ValueError:
            raise TokenizeFailed("the answer is not JSON", absent=True) from None
