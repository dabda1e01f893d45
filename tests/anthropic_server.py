"""A real, local Anthropic-compatible HTTP server for tests: the Messages API (JSON and streaming
SSE events), `count_tokens`, prompt caching at `cache_control` breakpoints, and scripted errors.

It bills with cl100k_base (so the dashboard's o200k estimate is off, and only `count_tokens` is
exact): the system blocks cost their text's tokens plus 3, each message 4 plus its text's, and
every prompt 3 more. Its reply echoes the last user message, cut to `max_tokens`.

Caching follows Anthropic's rule: a prompt's prefix up to a `cache_control` breakpoint is
written to the cache (`cache_creation_input_tokens`) when it is at least `min_cache_tokens`
long; a later prompt that starts with a written prefix (at any block boundary up to its last
breakpoint) reads it (`cache_read_input_tokens`); `input_tokens` is the rest.

    def test_x(anthropic_server):
        backend = AnthropicBackend("sk-ant-test", anthropic_server.base_url)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.counting.tokens import get_encoding
from tests.openai_server import RecordedRequest, echo_reply, split_chunks

#: Framing tokens, as negative ids no text token has.
_SYSTEM, _MESSAGE, _PROMPT = -1, -2, -3
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class AnthropicFault:
    """How the next /v1/messages request is answered (the defaults: normally)."""

    status: int = 200
    message: str = "Scripted failure."
    headers: dict[str, str] = field(default_factory=dict)
    #: Stream only: send an `error` event (this HTTP status's type) after this many text deltas.
    error_after: int | None = None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [str(block.get("text", "")) for block in content or [] if isinstance(block, dict)]


def _breakpoints(content: Any) -> list[bool]:
    if isinstance(content, str):
        return [False]
    return [isinstance(b, dict) and b.get("cache_control") is not None for b in content or []]


def api_key_of(request: RecordedRequest) -> str:
    """The key a request carried: `x-api-key`, or a bearer token (as newer SDKs send it)."""
    return request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
        "Bearer "
    )


class AnthropicServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.api_key: str | None = None
        self.min_cache_tokens = 1024
        #: Seconds to wait before each text delta (a slow model).
        self.chunk_delay = 0.0
        self._cache: set[tuple[int, ...]] = set()
        self._faults: deque[AnthropicFault] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> AnthropicServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail(self, status: int, message: str = "Scripted failure.", **headers: str) -> None:
        self._faults.append(AnthropicFault(status=status, message=message, headers=headers))

    def fail_mid_stream(self, after: int, status: int = 529, message: str = "Overloaded") -> None:
        self._faults.append(AnthropicFault(message=message, error_after=after, status=status))

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    # --- billing -----------------------------------------------------------------------------

    def blocks(self, body: dict[str, Any]) -> list[tuple[list[int], bool]]:
        """The prompt's blocks in order: (their tokens, whether a breakpoint ends them)."""
        encoding = get_encoding("cl100k_base")
        found: list[tuple[list[int], bool]] = []
        system = body.get("system") or []
        texts = _texts(system)
        for index, (text, mark) in enumerate(zip(texts, _breakpoints(system), strict=True)):
            head = [_SYSTEM] * 3 if index == 0 else []
            found.append((head + encoding.encode(text, disallowed_special=()), mark))
        for message in body.get("messages") or []:
            content = message.get("content")
            for index, (text, mark) in enumerate(zip(_texts(content), _breakpoints(content), strict=True)):
                head = [_MESSAGE] * 4 if index == 0 else []
                found.append((head + encoding.encode(text, disallowed_special=()), mark))
        return found

    def input_tokens(self, body: dict[str, Any]) -> int:
        return sum(len(tokens) for tokens, _ in self.blocks(body)) + 3

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        """input, cache read and cache write tokens of this prompt; its breakpoints are written."""
        blocks = self.blocks(body)
        total = self.input_tokens(body)
        prefix: list[int] = []
        ends: list[tuple[tuple[int, ...], bool]] = []
        for tokens, mark in blocks:
            prefix += tokens
            ends.append((tuple(prefix), mark))
        marked = [i for i, (_, mark) in enumerate(ends) if mark]
        if not marked:
            return {"input_tokens": total, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        with self._lock:
            read = max((len(p) for p, _ in ends[: marked[-1] + 1] if p in self._cache), default=0)
            written = 0
            for i in marked:
                key = ends[i][0]
                if len(key) >= self.min_cache_tokens and key not in self._cache:
                    self._cache.add(key)
                    written = len(key) - read
        return {
            "input_tokens": total - read - written,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        }


class _HTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-reply (stop, a time limit) is expected, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(server: AnthropicServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_test{next(server._ids):06d}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            kind = ERROR_TYPES.get(status, "api_error")
            self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append(RecordedRequest("POST", self.path, headers, body))
            sent_key = api_key_of(server.requests[-1])
            if server.api_key is not None and sent_key != server.api_key:
                self._error(401, "invalid x-api-key")
                return
            if not isinstance(body.get("messages"), list) or not body["messages"] or "model" not in body:
                self._error(400, "messages: at least one message is required")
                return
            if body["messages"][0].get("role") != "user":
                self._error(400, "messages: the first message must use the user role")
                return
            if self.path == "/v1/messages/count_tokens":
                self._send(200, {"input_tokens": server.input_tokens(body)})
            elif self.path == "/v1/messages":
                self._messages(body)
            else:
                self._error(404, f"Unknown path {self.path}.")

        def _messages(self, body: dict[str, Any]) -> None:
            fault = server._faults.popleft() if server._faults else AnthropicFault()
            if fault.status != 200 and fault.error_after is None:
                self._error(fault.status, fault.message, fault.headers)
                return
            last_user = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
            text = echo_reply([{"role": "user", "content": " ".join(_texts(last_user.get("content")))}])
            encoding = get_encoding("cl100k_base")
            tokens = encoding.encode(text, disallowed_special=())
            stop = "end_turn"
            if len(tokens) > int(body.get("max_tokens") or 0):
                text, stop = encoding.decode(tokens[: int(body["max_tokens"])]), "max_tokens"
            output = len(encoding.encode(text, disallowed_special=()))
            usage = server.usage(body)
            message = {
                "id": f"msg_test{next(server._ids):06d}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "stop_sequence": None,
            }
            if not body.get("stream"):
                content = [{"type": "text", "text": text}]
                self._send(
                    200,
                    {
                        **message,
                        "content": content,
                        "stop_reason": stop,
                        "usage": {**usage, "output_tokens": output},
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def event(kind: str, data: dict[str, Any]) -> None:
                raw = f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.flush()

            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            event("message_start", {"message": start})
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            event("ping", {})
            for sent, piece in enumerate(split_chunks(text)):
                if fault.error_after is not None and sent == fault.error_after:
                    kind = ERROR_TYPES.get(fault.status, "api_error")
                    event("error", {"error": {"type": kind, "message": fault.message}})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if server.chunk_delay:
                    time.sleep(server.chunk_delay)
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            event("content_block_stop", {"index": 0})
            event(
                "message_delta",
                {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": output}},
            )
            event("message_stop", {})
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@contextlib.contextmanager
def running_anthropic_server() -> Iterator[AnthropicServer]:
    server = AnthropicServer().start()
    try:
        yield server
    finally:
        server.stop()
