"""The bound on a session's uploads (ui/uploads.py), on Streamlit's own in-memory manager; the
real server is tested in tests/browser/test_uploads.py."""

from __future__ import annotations

from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from ui.uploads import (
    MAX_SESSION_UPLOAD_BYTES,
    MAX_SESSION_UPLOAD_FILES,
    SessionBoundedUploads,
    bound_session_uploads,
)


def upload(manager: MemoryUploadedFileManager, session: str, file_id: str, size: int) -> None:
    manager.add_file(
        session, UploadedFileRec(file_id=file_id, name=f"{file_id}.bin", type="x", data=b"x" * size)
    )


def held(manager: MemoryUploadedFileManager, session: str) -> list[str]:
    return list(manager.file_storage.get(session, {}))


def test_a_session_keeps_its_newest_files_within_the_count_and_bytes() -> None:
    manager = SessionBoundedUploads("/_stcore/upload_file")
    for number in range(MAX_SESSION_UPLOAD_FILES + 5):
        upload(manager, "flood", f"small{number}", 10)
    assert held(manager, "flood") == [f"small{n}" for n in range(5, MAX_SESSION_UPLOAD_FILES + 5)]
    big = MAX_SESSION_UPLOAD_BYTES // 3
    for number in range(4):
        upload(manager, "flood", f"big{number}", big)
    assert held(manager, "flood")[-3:] == ["big1", "big2", "big3"] and "big0" not in held(manager, "flood")
    assert sum(len(f.data) for f in manager.file_storage["flood"].values()) <= MAX_SESSION_UPLOAD_BYTES
    # Another session is not touched, and the manager's own total agrees with what is held.
    upload(manager, "visitor", "card", 1000)
    assert held(manager, "visitor") == ["card"]
    assert manager.get_stats()["cache_memory_bytes"][0].byte_length == sum(
        len(f.data) for files in manager.file_storage.values() for f in files.values()
    )


def test_a_file_sent_again_replaces_itself_and_one_too_large_is_not_kept() -> None:
    manager = SessionBoundedUploads("/_stcore/upload_file")
    upload(manager, "s", "same", MAX_SESSION_UPLOAD_BYTES // 2)
    upload(manager, "s", "same", MAX_SESSION_UPLOAD_BYTES // 2 + 1)
    assert (
        held(manager, "s") == ["same"]
        and len(manager.file_storage["s"]["same"].data) > MAX_SESSION_UPLOAD_BYTES // 2
    )
    upload(manager, "s", "huge", MAX_SESSION_UPLOAD_BYTES + 1)
    assert held(manager, "s") == ["same"]


def test_without_a_server_there_is_nothing_to_bound() -> None:
    assert bound_session_uploads() is False
