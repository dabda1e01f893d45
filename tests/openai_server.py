"""A real, local OpenAI-compatible HTTP server for tests, scriptable with faults.

It speaks the Chat Completions wire format (streaming SSE chunks, the final usage chunk, `[DONE]`,
non-streaming JSON) and `GET /v1/models`, on 127.0.0.1 in a background thread. Its default reply
echoes the last user message; usage is counted with `core.counting.tokens` like the real API bills it.

In a test (the `openai_server` fixture lives in tests/conftest.py)::

    def test_x(openai_server):
        openai_server.fail(429, "Slow down", headers={"Retry-After": "7"})
        backend = OpenAIBackend("sk-test", openai_server.base_url, max_retries=0)
        ...
        assert openai_server.requests[-1].body["model"] == "gpt-4o-mini"

Standalone (for browser tests): ``python -m tests.openai_server --port 8765``, then point the app
at it with ``OPENAI_BASE_URL=http://127.0.0.1:8765/v1``. Faults are scripted over HTTP with
``POST /_control/faults`` (a JSON object with `Fault`'s fields), ``GET /_control/requests`` and
``POST /_control/reset``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import tiktoken

from core.chat.prompt_cache import CACHE_RULES, OPENAI_RULE, PromptCache, prompt_token_ids
from core.counting.tokens import count_prompt_tokens, get_encoding, tokenizer_for

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o3-mini", "gpt-5-mini", "llama3.2")
CONTROL_PREFIX = "/_control/"


@dataclass
class Fault:
    """How the server answers the next chat completion request (one queued fault per request).

    The defaults are a normal answer; each field changes one thing.
    """

    #: HTTP status; anything but 200 sends `error` (or `body`) instead of a completion.
    status: int = 200
    #: OpenAI-style error object, sent as {"error": error} with a non-200 status.
    error: dict[str, Any] | None = None
    #: Raw body sent as is (with `content_type`), e.g. an HTML page where JSON was expected.
    body: str | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering at all (longer than the client timeout → a timeout).
    delay: float = 0.0
    #: Stream only: wait `delay` after this many content chunks instead (a stall mid-reply).
    delay_after_chunks: int | None = None
    #: Reply text to send instead of the echo.
    reply: str | None = None
    finish_reason: str = "stop"
    #: Stream only: drop the connection after this many content chunks (no finish_reason, no [DONE]).
    cut_after: int | None = None
    #: Stream only: "chunked" (HTTP/1.1, a cut is an incomplete body) or "close" (the body ends
    #: where the connection closes, so a cut looks like a clean end of stream).
    framing: Literal["chunked", "close"] = "chunked"
    #: Stream only: send `data: <this>` (e.g. not JSON) after `bad_chunk_after` content chunks.
    bad_chunk: str | None = None
    bad_chunk_after: int = 0
    #: Stream only: leave out the usage chunk even when stream_options.include_usage asks for it.
    omit_usage: bool = False
    #: Stream only: the usage chunk reports this many prompt and completion tokens instead.
    usage_tokens: int | None = None
    #: Answer with a redirect (302 unless `status` says another 3xx) to this URL.
    redirect_to: str | None = None
    #: Stream only: reply with this many bytes of text in deltas of `delta_bytes` (a huge reply).
    huge_reply_bytes: int | None = None
    delta_bytes: int = 8192
    #: Stream only: after the first content chunk, send an SSE comment (`: keep-alive`) every
    #: this many seconds, for `keep_alive_for` seconds, then finish the reply normally.
    keep_alive_every: float | None = None
    keep_alive_for: float = 10.0


@dataclass
class RecordedRequest:
    """One request as the server received it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: time.perf_counter() once the request was read; on Linux one clock for every process.
    received_at: float = field(default_factory=time.perf_counter)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


def echo_reply(messages: list[dict[str, Any]]) -> str:
    """The server's default, deterministic reply: it echoes the last user message."""
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"You said: {last_user}"


def split_chunks(text: str) -> list[str]:
    """The content deltas the server streams for `text`."""
    # Word-sized deltas, whitespace kept, so the chunks join back to exactly the reply.
    return re.findall(r"\s*\S+\s*|\s+", text) or [text]


@dataclass
class Billing:
    """How a server that is not OpenAI's counts prompts: its model's own tokenizer and chat
    template (`OpenAIServer.billing`; None bills like the OpenAI API, with `core.counting.tokens`).

    Usage, the optional tokenize endpoints and the context-window check all count the same way.
    """

    #: The tiktoken encoding standing in for the model's tokenizer (o200k is what the dashboard
    #: estimates with, so cl100k_base bills like a model whose tokenizer differs, most on
    #: Chinese), or CJK_CHARS: cl100k with every CJK character a token of its own, like a small
    #: sentencepiece vocabulary (a tokenizer the dashboard has no copy of).
    encoding: str = "cl100k_base"
    #: "chatml": Qwen's ``<|im_start|>role\ncontent<|im_end|>\n`` per message (additive framing);
    #: "gemma": the system prompt folded into the first user turn (framing that is not additive).
    template: Literal["chatml", "gemma"] = "chatml"
    #: Tokenize endpoints at the server root: vLLM's ``POST /tokenize`` or llama.cpp's
    #: ``POST /apply-template`` + ``POST /tokenize`` (and ``GET /props``); None: neither (Ollama).
    tokenize: Literal["vllm", "llama.cpp"] | None = None
    #: The context window: listed in /v1/models (as vLLM does), answered by the tokenize
    #: endpoints; a prompt plus its reply cap beyond it is refused with vLLM's 400.
    max_model_len: int | None = None
    #: When not 200, the tokenize endpoints answer with this status (a server failing to count).
    tokenize_status: int = 200

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text the chat template makes of `messages`."""
        if self.template == "chatml":
            turns = "".join(f"<|im_start|>{m.get('role')}\n{m.get('content')}<|im_end|>\n" for m in messages)
            return turns + ("<|im_start|>assistant\n" if add_generation_prompt else "")
        prefix, rest = "", messages
        if messages and messages[0].get("role") == "system":
            prefix, rest = f"{messages[0].get('content')}\n\n", messages[1:]
        text = "<bos>"
        for message in rest:
            role = "model" if message.get("role") == "assistant" else "user"
            content = f"{prefix}{message.get('content')}" if role == "user" else str(message.get("content"))
            prefix = "" if role == "user" else prefix
            text += f"<start_of_turn>{role}\n{content}<end_of_turn>\n"
        return text + ("<start_of_turn>model\n" if add_generation_prompt else "")

    def tokens(self, text: str) -> list[int]:
        """`text`'s tokens, the template's markers each one special token."""
        encoding = _billing_encoding("cl100k_base" if self.encoding == CJK_CHARS else self.encoding)
        if self.encoding != CJK_CHARS:
            return encoding.encode(text, allowed_special=set(TEMPLATE_SPECIALS), disallowed_special=())
        tokens: list[int] = []
        for part in _CJK_RUN.split(text):
            if _CJK_RUN.fullmatch(part):
                tokens += [_CJK_CHAR_IDS + ord(char) for char in part]
            elif part:
                tokens += encoding.encode(part, allowed_special=set(TEMPLATE_SPECIALS), disallowed_special=())
        return tokens

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return len(self.tokens(self.render(messages)))


CJK_CHARS = "cjk-chars"
_CJK_RUN = re.compile("([　-〿㐀-䶿一-鿿＀-￯]+)")
_CJK_CHAR_IDS = 1_000_000
#: Chat-template markers, special tokens of the billing tokenizer.
TEMPLATE_SPECIALS = ("<|im_start|>", "<|im_end|>", "<bos>", "<start_of_turn>", "<end_of_turn>")
_billing_encodings: dict[str, tiktoken.Encoding] = {}


def _billing_encoding(name: str) -> tiktoken.Encoding:
    if name not in _billing_encodings:
        base = get_encoding(name)
        specials = {token: base.n_vocab + i for i, token in enumerate(TEMPLATE_SPECIALS)}
        _billing_encodings[name] = tiktoken.Encoding(
            f"{name}-chat",
            pat_str=base._pat_str,
            mergeable_ranks=base._mergeable_ranks,
            special_tokens={**base._special_tokens, **specials},
        )
    return _billing_encodings[name]


class OpenAIServer:
    """The server, its recorded requests and its fault queue. Use `start()`/`stop()` or `with`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> None:
        self.requests: list[RecordedRequest] = []
        self.models: list[str] = list(DEFAULT_MODELS)
        #: Model name -> how every request for that model is answered (e.g. one column of a
        #: comparison failing while the others stream), instead of the fault queue.
        self.model_faults: dict[str, Fault] = {}
        #: When set, a request whose bearer token differs gets OpenAI's 401 (with a masked key).
        self.api_key: str | None = None
        #: When True, requests carrying `stream_options` get a 400, like some compatible servers.
        self.rejects_stream_options = False
        #: Seconds between streamed chunks, so a browser can watch a reply arrive.
        self.chunk_delay = 0.0
        #: When set, usage is billed as a server that is not OpenAI's would (see `Billing`).
        self.billing: Billing | None = None
        #: The prompt cache usage reports hits from: OpenAI's rule by default (1,024 tokens on, in
        #: blocks of 128); `PromptCache(PREFIX_RULE)` for a plain prefix cache, as llama.cpp's.
        self.prompt_cache = PromptCache(OPENAI_RULE)
        #: When set, a prompt longer than this many tokens is cut to its last `num_ctx` silently,
        #: as Ollama cuts a prompt to its num_ctx: usage reports only what was read.
        self.num_ctx: int | None = None
        #: "openai": `prompt_tokens_details.cached_tokens`; "deepseek": DeepSeek's
        #: `prompt_cache_hit_tokens` and `prompt_cache_miss_tokens` instead.
        self.cache_fields: Literal["openai", "deepseek"] = "openai"
        #: Responses the client hung up on before they were complete.
        self.disconnects = 0
        #: Bytes of streamed reply bodies written (per request, in order).
        self.bytes_streamed: list[int] = []
        self.quiet = quiet
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = _HTTPServer((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="openai-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a `delay` fault
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- scripting ---------------------------------------------------------------------------

    def enqueue(self, fault: Fault) -> None:
        """Answer the next chat completion request as `fault` says; faults are used in order."""
        with self._lock:
            self._faults.append(fault)

    def fail(
        self,
        status: int,
        message: str = "Scripted failure.",
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next request with `status` and an OpenAI-style error body."""
        error = {"message": message, "type": type, "param": param, "code": code}
        self.enqueue(Fault(status=status, error=error, headers=dict(headers or {})))

    def delay(self, seconds: float) -> None:
        """Wait `seconds` before answering the next request (make it exceed the client timeout)."""
        self.enqueue(Fault(delay=seconds))

    def stall(self, seconds: float, *, after_chunks: int) -> None:
        """Stop sending the next stream for `seconds` after `after_chunks` content chunks."""
        self.enqueue(Fault(delay=seconds, delay_after_chunks=after_chunks))

    def cut_stream(self, after_chunks: int, *, framing: Literal["chunked", "close"] = "chunked") -> None:
        """Drop the next stream's connection after `after_chunks` content chunks."""
        self.enqueue(Fault(cut_after=after_chunks, framing=framing))

    def send_raw(self, body: str, *, status: int = 200, content_type: str = "text/html") -> None:
        """Answer the next request with `body` as is, e.g. a proxy's HTML page."""
        self.enqueue(Fault(status=status, body=body, content_type=content_type))

    def send_bad_chunk(self, data: str = "this is not json", *, after_chunks: int = 1) -> None:
        """Put `data: <data>` into the next stream after `after_chunks` chunks.

        The default is not JSON; an OpenAI error object (`{"error": {...}}`) is an error event.
        """
        self.enqueue(Fault(bad_chunk=data, bad_chunk_after=after_chunks))

    def omit_usage(self) -> None:
        """Send the next stream without a usage chunk, like servers that ignore include_usage."""
        self.enqueue(Fault(omit_usage=True))

    def reply(self, text: str, *, finish_reason: str = "stop") -> None:
        """Answer the next request with `text` instead of the echo."""
        self.enqueue(Fault(reply=text, finish_reason=finish_reason))

    def redirect(self, url: str, *, status: int = 302) -> None:
        """Answer the next request with a redirect to `url`."""
        self.enqueue(Fault(status=status, redirect_to=url))

    def huge_reply(self, size: int = 5 * 1024 * 1024, *, delta_bytes: int = 8192) -> None:
        """Stream `size` bytes of reply text in `delta_bytes` deltas as the next reply."""
        self.enqueue(Fault(huge_reply_bytes=size, delta_bytes=delta_bytes))

    def keep_alive_drip(self, every: float, *, lasting: float = 10.0) -> None:
        """Send one content chunk, then only `: keep-alive` comments every `every` s for `lasting` s."""
        self.enqueue(Fault(keep_alive_every=every, keep_alive_for=lasting))

    def bad_usage(self, tokens: int = 10**20) -> None:
        """Report `tokens` prompt and completion tokens in the next reply's usage chunk."""
        self.enqueue(Fault(usage_tokens=tokens))

    def reset(self) -> None:
        """Forget recorded requests, queued faults and the prompt cache."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
        self.prompt_cache.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # --- what a request gets -----------------------------------------------------------------

    def _next_fault(self) -> Fault:
        with self._lock:
            return self._faults.popleft() if self._faults else Fault()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True when it is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def _completion_id(self) -> str:
        return f"chatcmpl-test{next(self._ids):06d}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in a `delay` fault must not block shutdown

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, closed keep-alive connections) are expected, not errors.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _usage(body: dict[str, Any], reply: str, server: OpenAIServer) -> dict[str, Any]:
    """The usage object for this request and reply, its cache hits from the server's cache."""
    model, messages, billing = str(body.get("model", "")), body.get("messages", []), server.billing
    if billing is None:
        prompt = count_prompt_tokens(messages, model)
        completion = tokenizer_for(model).count_text(reply)
        tokens = prompt_token_ids(messages, tokenizer_for(model))
    else:
        tokens = billing.tokens(billing.render(messages))
        prompt = len(tokens)
        completion = len(billing.tokens(reply)) + 1  # and the end-of-turn token it stopped at
    if server.num_ctx is not None and prompt > server.num_ctx:
        tokens = tokens[-server.num_ctx :]
        prompt = len(tokens)
    cached = server.prompt_cache.serve(tokens)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if server.cache_fields == "deepseek":
        del usage["prompt_tokens_details"]
        usage |= {"prompt_cache_hit_tokens": cached, "prompt_cache_miss_tokens": prompt - cached}
    return usage


def _capped(body: dict[str, Any], text: str, finish_reason: str) -> tuple[str, str]:
    """The reply cut to the request's token cap, and finish_reason "length" when it was cut."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int):
        return text, finish_reason
    encoding = tokenizer_for(str(body.get("model", ""))).encoding
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= cap:
        return text, finish_reason
    return encoding.decode(tokens[:cap]), "length"


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real API

        def log_message(self, format: str, *args: Any) -> None:
            if not server.quiet:
                super().log_message(format, *args)

        # --- plumbing ---------------------------------------------------------------------

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode("utf-8", "replace")

        def _send(
            self, status: int, payload: Any, *, content_type: str = "application/json", headers: Any = None
        ) -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, message: str, *, code: str | None = None, param: str | None = None
        ) -> None:
            error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
            self._send(status, {"error": error})

        # --- routes -----------------------------------------------------------------------

        def do_GET(self) -> None:
            if self.path == CONTROL_PREFIX + "requests":
                self._send(200, [asdict(r) for r in server.requests])
                return
            server._record(RecordedRequest("GET", self.path, _lower(self.headers), None))
            if server.billing is not None and self._tokenize(self.path.rstrip("/"), None):
                return
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]
                if server.billing is not None and server.billing.max_model_len:
                    for entry in data:
                        entry["max_model_len"] = server.billing.max_model_len
                self._send(200, {"object": "list", "data": data})
            else:
                self._error(404, f"Unknown path {self.path}.")

        def do_POST(self) -> None:
            body = self._read_body()
            if self.path.startswith(CONTROL_PREFIX):
                self._control(self.path[len(CONTROL_PREFIX) :], body)
                return
            server._record(RecordedRequest("POST", self.path, _lower(self.headers), body))
            if server.billing is not None and self._tokenize(self.path.rstrip("/"), body):
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"Unknown path {self.path}.")
                return
            # The client may have given up already (e.g. it timed out during a `delay` fault).
            try:
                self._chat(body)
            except (BrokenPipeError, ConnectionResetError):
                with server._lock:
                    server.disconnects += 1
                self.close_connection = True

        def _tokenize(self, path: str, body: Any) -> bool:
            """Answer the billing's tokenize endpoints (True when `path` was one of them)."""
            billing = server.billing
            assert billing is not None
            body = body if isinstance(body, dict) else {}
            endpoints = {"/tokenize", "/apply-template", "/props"} if billing.tokenize else set()
            if path in endpoints and billing.tokenize_status != 200:
                self._error(billing.tokenize_status, "Scripted tokenize failure.")
                return True
            if billing.tokenize == "vllm" and path == "/tokenize" and self.command == "POST":
                if isinstance(body.get("messages"), list):
                    generation = bool(body.get("add_generation_prompt", True))
                    text = billing.render(body["messages"], add_generation_prompt=generation)
                else:
                    text = str(body.get("prompt", ""))
                tokens = billing.tokens(text)
                answer = {"count": len(tokens), "max_model_len": billing.max_model_len, "tokens": tokens}
                self._send(200, {**answer, "token_strs": None})
                return True
            if billing.tokenize == "llama.cpp" and self.command == "POST" and path == "/apply-template":
                self._send(200, {"prompt": billing.render(list(body.get("messages") or []))})
                return True
            if billing.tokenize == "llama.cpp" and self.command == "POST" and path == "/tokenize":
                self._send(200, {"tokens": billing.tokens(str(body.get("content", "")))})
                return True
            if billing.tokenize == "llama.cpp" and self.command == "GET" and path == "/props":
                self._send(200, {"default_generation_settings": {"n_ctx": billing.max_model_len}})
                return True
            return False

        def _control(self, action: str, body: Any) -> None:
            if action == "faults" and isinstance(body, dict):
                server.enqueue(Fault(**body))
            elif action == "reset":
                server.reset()
            else:
                self._error(400, f"Unknown control action {action!r}.")
                return
            self._send(200, {"ok": True})

        def _chat(self, body: Any) -> None:
            model = body.get("model") if isinstance(body, dict) else None
            fault = server.model_faults.get(str(model)) or server._next_fault()
            if fault.delay_after_chunks is None and server._sleep(fault.delay):
                return
            if fault.redirect_to is not None:
                status = fault.status if 300 <= fault.status < 400 else 302
                self._send(
                    status,
                    f"<html><body>Moved to {fault.redirect_to}</body></html>",
                    content_type="text/html",
                    headers={"Location": fault.redirect_to, **fault.headers},
                )
                return
            if fault.status != 200 or fault.body is not None:
                content_type = fault.content_type or "application/json"
                payload = fault.body if fault.body is not None else {"error": fault.error or {}}
                self._send(fault.status, payload, content_type=content_type, headers=fault.headers)
                return
            if server.api_key is not None:
                sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if sent != server.api_key:
                    # OpenAI's own wording, which echoes a masked form of the key.
                    masked = f"{sent[:3]}{'*' * max(len(sent) - 7, 0)}{sent[-4:]}"
                    self._error(
                        401,
                        f"Incorrect API key provided: {masked}. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        code="invalid_api_key",
                    )
                    return
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("messages"), list)
                or "model" not in body
            ):
                self._error(400, "Request body must be JSON with 'model' and 'messages'.")
                return
            if server.rejects_stream_options and "stream_options" in body:
                self._error(
                    400, "Unrecognized request argument supplied: stream_options", param="stream_options"
                )
                return
            if body.get("stream") and fault.huge_reply_bytes is not None:
                self._stream_huge(body, fault)
                return
            billing = server.billing
            if billing is not None and billing.max_model_len:
                prompt = billing.prompt_tokens(body["messages"])
                cap = body.get("max_completion_tokens") or body.get("max_tokens") or 0
                if prompt + cap > billing.max_model_len:
                    self._error(
                        400,
                        f"This model's maximum context length is {billing.max_model_len} tokens. However, "
                        f"you requested {prompt + cap} tokens ({prompt} in the messages, {cap} in the "
                        "completion). Please reduce the length of the messages or completion.",
                    )
                    return
            text = fault.reply if fault.reply is not None else echo_reply(body["messages"])
            text, finish_reason = _capped(body, text, fault.finish_reason)
            if body.get("stream"):
                self._stream(body, text, finish_reason, fault)
            else:
                self._complete(body, text, finish_reason, fault)

        def _complete(self, body: dict[str, Any], text: str, finish_reason: str, fault: Fault) -> None:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": [],
            }
            self._send(
                200,
                {
                    "id": server._completion_id(),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
                    ],
                    "usage": _usage(body, text, server),
                    "service_tier": "default",
                    "system_fingerprint": "fp_test",
                },
                headers=fault.headers,
            )

        def _stream(self, body: dict[str, Any], text: str, finish_reason: str, fault: Fault) -> None:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunked = fault.framing == "chunked"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            for name, value in fault.headers.items():
                self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()

            written = 0

            def write(data: str) -> None:
                nonlocal written
                raw = data.encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n" if chunked else raw)
                self.wfile.flush()
                written += len(raw)

            base = {
                "id": server._completion_id(),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": "fp_test",
            }

            def event(choices: list[dict[str, Any]], **extra: Any) -> None:
                chunk = {**base, "choices": choices, **extra}
                if include_usage and "usage" not in extra:
                    chunk["usage"] = None  # as OpenAI does on every chunk but the last
                write(f"data: {json.dumps(chunk)}\n\n")

            def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
                return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

            event(choice({"role": "assistant", "content": "", "refusal": None}))
            for sent, piece in enumerate(split_chunks(text)):
                if fault.cut_after is not None and sent >= fault.cut_after:
                    self.close_connection = True  # no finish_reason, no [DONE], no final 0-chunk
                    return
                if fault.bad_chunk is not None and sent == fault.bad_chunk_after:
                    write(f"data: {fault.bad_chunk}\n\n")
                if sent == fault.delay_after_chunks and server._sleep(fault.delay):
                    return
                if server._sleep(server.chunk_delay):
                    return
                event(choice({"content": piece}))
                if fault.keep_alive_every is not None and sent == 0:
                    until = time.monotonic() + fault.keep_alive_for
                    while time.monotonic() < until:
                        if server._sleep(fault.keep_alive_every):
                            return
                        write(": keep-alive\n\n")
            server.bytes_streamed.append(written)
            if fault.cut_after is not None:
                self.close_connection = True
                return
            event(choice({}, finish_reason))
            if include_usage and not fault.omit_usage:
                usage = _usage(body, text, server)
                if fault.usage_tokens is not None:
                    usage.update(prompt_tokens=fault.usage_tokens, completion_tokens=fault.usage_tokens)
                    usage["total_tokens"] = 2 * fault.usage_tokens
                event([], usage=usage)
            write("data: [DONE]\n\n")
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def _stream_huge(self, body: dict[str, Any], fault: Fault) -> None:
            """`fault.huge_reply_bytes` of text in `fault.delta_bytes` deltas, chunked, then [DONE]."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            base = {"id": server._completion_id(), "object": "chat.completion.chunk", "created": 0}
            base["model"] = body["model"]
            delta_text = "x" * (fault.delta_bytes - 1) + "\n"
            written = 0

            def write(data: str) -> None:
                nonlocal written
                raw = data.encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                written += len(raw)

            def event(choices: list[dict[str, Any]]) -> None:
                write(f"data: {json.dumps({**base, 'choices': choices})}\n\n")

            try:
                remaining = fault.huge_reply_bytes or 0
                while remaining > 0:
                    piece = delta_text[:remaining]
                    event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                    remaining -= len(piece)
                event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
                write("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
            finally:
                server.bytes_streamed.append(written)

    return Handler


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def unused_port() -> int:
    """A port nothing listens on (bound, then released), for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(**kwargs: Any) -> Iterator[OpenAIServer]:
    """A started `OpenAIServer`, stopped on exit (for fixtures of any scope)."""
    with OpenAIServer(**kwargs) as server:
        yield server


@contextlib.contextmanager
def server_process(*, chunk_delay: float = 0.0, prompt_cache: str = "openai") -> Iterator[str]:
    """The server in a process of its own (so it does not share the caller's interpreter and
    GIL, as in the benchmarks); yields its root URL (without /v1), stopped on exit."""
    port = unused_port()
    command = [
        sys.executable,
        "-m",
        "tests.openai_server",
        "--port",
        str(port),
        "--chunk-delay",
        str(chunk_delay),
        "--prompt-cache",
        prompt_cache,
    ]
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the test model server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the test OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None, help="reject requests that do not carry this key")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--prompt-cache", choices=sorted(CACHE_RULES), default="openai", help="the prompt cache's rule"
    )
    args = parser.parse_args(argv)
    server = OpenAIServer(args.host, args.port, quiet=not args.verbose)
    server.prompt_cache = PromptCache(CACHE_RULES[args.prompt_cache])
    server.api_key = args.api_key
    server.chunk_delay = args.chunk_delay
    print(f"OpenAI-compatible test server on http://{args.host}:{server.port}/v1", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
