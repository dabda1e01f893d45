"""Uploads a session holds are bounded (issue 17, item 6): files PUT straight to Streamlit's upload
endpoint, with the session's id and XSRF cookie as a page has them, keep at most
`MAX_SESSION_UPLOAD_BYTES` in the server's memory, however many are sent. Measured by the
server's own figure (`/_stcore/metrics`, the upload manager's bytes) and its resident memory."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import UI_TIMEOUT_MS, VIEWPORT, StreamlitServer
from ui.uploads import MAX_SESSION_UPLOAD_BYTES, MAX_SESSION_UPLOAD_FILES

if TYPE_CHECKING:
    from playwright.sync_api import Browser, WebSocket

pytestmark = pytest.mark.browser

FILE_BYTES = 5 * 1024 * 1024 - 4096  # under server.maxUploadSize (5 MB) with its form framing
UPLOADS = 10
MIB = 1024 * 1024


def held_upload_bytes(server: StreamlitServer) -> int:
    """What the server says its upload manager holds (0 when it holds nothing)."""
    with urllib.request.urlopen(f"{server.url}_stcore/metrics?families=cache_memory_bytes", timeout=10) as r:
        text = r.read().decode()
    found = re.search(r'cache_memory_bytes\{cache_type="UploadedFileManager"[^}]*\}\s+(\d+)', text)
    return int(found.group(1)) if found else 0


def test_files_put_straight_to_the_upload_endpoint_are_bounded_per_session(
    streamlit_server: StreamlitServer, browser: Browser
) -> None:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    session_ids: list[str] = []

    def watch(socket: WebSocket) -> None:
        def on_frame(payload: bytes | str) -> None:
            if isinstance(payload, bytes):
                message = ForwardMsg.FromString(payload)
                if message.HasField("new_session"):
                    session_ids.append(message.new_session.initialize.session_id)

        socket.on("framereceived", on_frame)

    page.on("websocket", watch)
    page.goto(streamlit_server.url)
    page.wait_for_function("() => document.querySelector('[data-testid=\"stChatInputTextArea\"]')")
    assert session_ids, "the page's session never started"
    token = next(c["value"] for c in context.cookies() if c["name"] == "_streamlit_xsrf")

    def upload_round() -> None:
        statuses = []
        for number in range(UPLOADS):
            url = f"{streamlit_server.url}_stcore/upload_file/{session_ids[-1]}/{uuid.uuid4()}"
            response = page.request.put(
                url,
                headers={"X-Xsrftoken": token},
                multipart={
                    "file": {
                        "name": f"f{number}.bin",
                        "mimeType": "application/octet-stream",
                        "buffer": b"x" * FILE_BYTES,
                    }
                },
            )
            statuses.append(response.status)
        assert statuses == [204] * UPLOADS  # accepted, as Streamlit accepts them: the oldest let go
        deadline = time.monotonic() + 15  # the metrics keep their figure a few seconds
        while (held := held_upload_bytes(streamlit_server)) != 4 * FILE_BYTES and time.monotonic() < deadline:
            time.sleep(0.5)
        # 20 MiB holds four of these files: the six oldest were let go (unbounded: all ten, 50 MB).
        assert held == (MAX_SESSION_UPLOAD_BYTES // FILE_BYTES) * FILE_BYTES == 4 * FILE_BYTES

    upload_round()
    assert MAX_SESSION_UPLOAD_FILES >= 4
    # Resident memory over a second round, once the first has sized the allocator's arenas (the
    # first round's own growth, 20 MiB held plus what the allocator keeps, varied 30-45 MiB): the
    # memory of the files let go is used again, where an unbounded session would hold 50 MB more.
    rss_before = streamlit_server.rss_kib()
    upload_round()
    grown_mib = (streamlit_server.rss_kib() - rss_before) / 1024
    print(f"server RSS +{grown_mib:.1f} MiB over a second round of {UPLOADS} uploads")
    assert grown_mib < 20, grown_mib
    context.close()
