"""Server memory for one huge reply: the local model server streams 5 MB of text in 8 KB deltas
to a `streamlit run` server (one visitor, over Streamlit's WebSocket protocol); the server's
resident memory is read before and after, with its peak.

The reply is cut at its size limit (8 bytes per token of the reply cap, plus 64 KiB) and drawn at
most every 100 ms, so memory follows what is kept, not the reply times its chunks (before, one
such reply added about 1.4 GB and three took the server from 0.49 to 4.9 GB).

Run: python -m benchmarks.reply_memory
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request

from benchmarks.load import TURN_TIMEOUT_S, Visitor, server_use, streamlit_server
from tests.openai_server import server_process

REPLY_BYTES = 5 * 1024 * 1024
DELTA_BYTES = 8192


def main() -> None:
    with server_process() as model_url, tempfile.TemporaryDirectory() as folder:
        env = {"OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_API_KEY": "sk-reply-memory-benchmark"}
        with streamlit_server(folder, [], env) as server:
            visitor = Visitor(port=server.port, index=0, offset_s=0, duration_s=0)  # type: ignore[attr-defined]
            with visitor.connect() as ws:
                visitor.load_page(ws)
                # A turn as a tab takes it, keeping the chat's new ids for the next message (the chat is
                # a fragment whose id changes when the page above it does: the first-run notice goes).
                visitor.turn(ws, "warm-up")
                before = server_use(server.pid)
                fault = {"huge_reply_bytes": REPLY_BYTES, "delta_bytes": DELTA_BYTES}
                request = urllib.request.Request(
                    f"{model_url}/_control/faults", data=json.dumps(fault).encode(), method="POST"
                )
                urllib.request.urlopen(request, timeout=10).close()
                started = time.monotonic()
                visitor.send(ws, "a huge reply, please")
                shown = 0
                for _ in range(2):
                    for message, _at in visitor.run_messages(ws, time.monotonic() + TURN_TIMEOUT_S):
                        if message.WhichOneof("type") == "delta":
                            body = message.delta.new_element.markdown.body
                            shown = max(shown, len(body.encode()))
                elapsed = time.monotonic() - started
                after = server_use(server.pid)
    print(f"one reply of {REPLY_BYTES / 2**20:.0f} MiB in {DELTA_BYTES // 1024} KiB deltas, one visitor\n")
    print(f"server RSS before  {before.rss_mib:8.1f} MiB")
    print(f"server RSS after   {after.rss_mib:8.1f} MiB  (growth {after.rss_mib - before.rss_mib:+.1f} MiB)")
    peak_growth = after.peak_rss_mib - before.rss_mib
    print(f"server peak RSS    {after.peak_rss_mib:8.1f} MiB  (peak growth {peak_growth:+.1f} MiB)")
    print(f"largest text drawn {shown / 1024:8.1f} KiB, turn took {elapsed:.1f} s; target growth ≤ 50 MiB")


if __name__ == "__main__":
    main()
