"""A bound on the uploaded files one browser session holds in the server's memory.

Streamlit 1.67 keeps every file PUT to `/_stcore/upload_file/<session>/<file>` in memory until
the session ends, bounded only per file (`server.maxUploadSize`, 5 MB here): ten 5 MB uploads
straight to that endpoint held +51 MiB. It offers no hook for more under `streamlit run`: the
server builds its `MemoryUploadedFileManager` itself (streamlit/web/server/server.py, `Server.
__init__`; starlette_app.py, `App._create_runtime`), with no setting to choose another, and the
upload route calls that object's `add_file` (starlette_routes.py, `create_upload_routes`).
(`st.App` takes middleware, but only when the app is run as an ASGI app, not by `streamlit run`.)

So the running manager is given this subclass's `add_file` once per process
(`bound_session_uploads`): before a file is added, the session's oldest files are let go until
it holds at most `MAX_SESSION_UPLOAD_FILES` files and `MAX_SESSION_UPLOAD_BYTES` bytes. The page's
uploaders need far less (one conversation or test-set file, a few persona files at once), so a
visitor never meets the bound; a script flooding the endpoint keeps only its newest files.
"""

from __future__ import annotations

from typing import ClassVar, Final

from streamlit.runtime import Runtime
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

MAX_SESSION_UPLOAD_FILES: Final = 20
MAX_SESSION_UPLOAD_BYTES: Final = 20 * 1024 * 1024


class SessionBoundedUploads(MemoryUploadedFileManager):
    """Streamlit's in-memory manager, holding at most `max_files` files and `max_bytes` bytes
    per session (the oldest let go first)."""

    max_files: ClassVar[int] = MAX_SESSION_UPLOAD_FILES
    max_bytes: ClassVar[int] = MAX_SESSION_UPLOAD_BYTES

    def add_file(self, session_id: str, file: UploadedFileRec) -> None:
        if len(file.data) > self.max_bytes:
            return  # never kept (server.maxUploadSize is smaller: it cannot arrive)
        with self._lock:
            held = [f for f in self.file_storage.get(session_id, {}).values() if f.file_id != file.file_id]
        count, size = len(held) + 1, sum(len(f.data) for f in held) + len(file.data)
        for oldest in held:  # in the order they came
            if count <= self.max_files and size <= self.max_bytes:
                break
            self.remove_file(session_id, oldest.file_id)
            count, size = count - 1, size - len(oldest.data)
        super().add_file(session_id, file)


#: The runtime last looked at, and whether its uploads are bounded.
_looked_at: tuple[Runtime, bool] | None = None


def bound_session_uploads() -> bool:
    """Bound the running server's uploads per session (once per process: every run after only
    checks that the runtime is the same). False when there is no server (AppTest, a bare script)
    or its manager is not Streamlit's own."""
    global _looked_at
    if not Runtime.exists():
        return False
    runtime = Runtime.instance()
    if type(runtime) is not Runtime:  # a stand-in (AppTest's), with no upload route to bound
        return False
    if _looked_at is not None and _looked_at[0] is runtime:
        return _looked_at[1]
    manager = runtime.uploaded_file_mgr
    bounded = isinstance(manager, SessionBoundedUploads)
    if type(manager) is MemoryUploadedFileManager:
        manager.__class__ = SessionBoundedUploads  # the route holds this object: its class is changed
        bounded = True
    _looked_at = (runtime, bounded)
    return bounded
