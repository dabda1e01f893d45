"""Nothing typed or received is lost when the server dies: a process streaming a reply through
the application service is killed with SIGKILL mid-reply, and a new process reading the same
database finds the question and the reply so far (saved at most every 2 s), marked interrupted.
Real parts throughout: the `openai` SDK against the local test server streaming slowly, the
store on SQLite and PostgreSQL, a real `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from core.store.database import Store
from tests.conftest import REPO_ROOT
from tests.openai_server import OpenAIServer

OWNER = "local"
QUESTION = " ".join(f"word{i}" for i in range(60))  # the echo streams in 62 deltas

#: A visitor's service in its own process: send QUESTION, print each chunk's number as it arrives.
STREAMING_VISITOR = textwrap.dedent(
    """
    import sys
    from core.providers.connection import Backends
    from core.counting.model_info import load_model_table
    from core.personas.persona import Persona
    from core.service import Deployment, VisitorService
    from core.store.database import Store
    from core.store.workspace import Workspace

    url, base_url, owner, question = sys.argv[1:]
    environ = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": base_url, "OPENAI_MAX_RETRIES": "0"}
    service = VisitorService(
        Workspace(Store(url), owner),
        Backends(),
        prices=load_model_table(),
        deployment=Deployment.from_settings({}, environ),
    )
    service.connect()
    persona = Persona.model_validate(
        {"id": "cook", "name": "Cook", "avatar": "🍳", "description": "Cooks.",
         "system_prompt": "You cook.", "model": "gpt-4o-mini", "context_budget": 4000,
         "max_reply_tokens": 500}
    )
    key, _, _ = service.session_for(persona)
    print(key, flush=True)
    for number, _chunk in enumerate(service.send(key, question), start=1):
        print(number, flush=True)
    print("done", flush=True)
    """
)


def kill_mid_reply(database_url: str, model: OpenAIServer, after_chunks: int) -> tuple[str, int]:
    """Start a visitor's process sending QUESTION, `kill -9` it once `after_chunks` chunks of the
    reply arrived; the conversation's key and the chunks it had."""
    model.chunk_delay = 0.1  # about 6 s for the whole reply
    Store(database_url).close()  # the schema, before the visitor's process opens it
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATABASE_URL"))}
    visitor = subprocess.Popen(
        [sys.executable, "-c", STREAMING_VISITOR, database_url, model.base_url, OWNER, QUESTION],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert visitor.stdout is not None
        key = visitor.stdout.readline().strip()
        chunks = 0
        while chunks < after_chunks:
            line = visitor.stdout.readline().strip()
            assert line.isdigit(), (line, visitor.stderr.read() if visitor.stderr else "")
            chunks = int(line)
        os.kill(visitor.pid, signal.SIGKILL)
        visitor.wait(timeout=10)
    finally:
        if visitor.poll() is None:
            visitor.kill()
            visitor.wait(timeout=10)
    assert visitor.returncode == -signal.SIGKILL
    return key, chunks


def test_kill_9_mid_reply_keeps_the_question_and_the_reply_so_far(
    backend_url: str, openai_server: OpenAIServer
) -> None:
    # 3.5 s of reply: one draft saved at 2 s, the next due at 4 s.
    key, chunks = kill_mid_reply(backend_url, openai_server, after_chunks=35)
    with Store(backend_url) as reopened:
        [listed] = reopened.list(OWNER)
        assert listed.id == key and listed.title.startswith("word0")
        conversation, handle = reopened.load(OWNER, key)
        question, reply = conversation.messages[1:]
        assert (question.role, question.content) == ("user", QUESTION)
        whole = "You said: " + QUESTION
        assert reply.role == "assistant" and reply.interrupted and whole.startswith(reply.content)
        # Saved at most 2 s apart: the draft holds at least the first 2 s of the reply (the
        # chunks after the draft saved at 2 s are lost, no more), never the whole reply.
        words = len(reply.content.split())
        assert 15 <= words <= chunks < 62, (words, chunks)
        assert conversation.turns[-1].interrupted and handle.reply_draft_saved
        # A reload offers what fits an interrupted reply: regenerate it, or continue it.
        assert conversation.pending_user_message is None and conversation.last_reply is reply


def test_kill_9_before_any_draft_keeps_the_question_pending_for_retry(
    backend_url: str, openai_server: OpenAIServer
) -> None:
    key, _ = kill_mid_reply(backend_url, openai_server, after_chunks=5)  # 0.5 s: no draft yet
    with Store(backend_url) as reopened:
        conversation, handle = reopened.load(OWNER, key)
    [question] = conversation.messages[1:]
    assert conversation.pending_user_message is question and question.content == QUESTION
    assert not conversation.turns and not handle.reply_draft_saved
