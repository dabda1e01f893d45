"""Nothing typed or received is lost when the server dies: a process streaming a reply (or a
comparison's columns) through the application service is killed with SIGKILL mid-reply, and a
new process reading the same database finds the question and the reply so far (saved at most
every 2 s), marked interrupted.
Real parts throughout: the `openai` SDK against the local test server streaming slowly, the
store on SQLite and PostgreSQL, a real `kill -9`."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

from core.counting.model_info import load_model_table
from core.personas.persona import Persona
from core.providers.connection import Backends
from core.service import ColumnChoice, Deployment, VisitorService
from core.store.database import Store
from core.store.workspace import Workspace
from tests.conftest import REPO_ROOT
from tests.openai_server import OpenAIServer

OWNER = "local"
COOK = Persona.model_validate(
    {"id": "cook", "name": "Cook", "avatar": "🍳", "description": "Cooks.", "system_prompt": "You cook.",
     "model": "gpt-4o-mini", "context_budget": 4000, "max_reply_tokens": 500}
)  # fmt: skip
QUESTION = " ".join(f"word{i}" for i in range(60))  # the echo streams in 62 deltas

#: A visitor's service in its own process (argv: database URL, model server, owner, question),
#: with `persona` to talk to.
VISITOR = textwrap.dedent(
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
    """
)

#: A visitor sending QUESTION, printing each chunk's number as it arrives.
STREAMING_VISITOR = VISITOR + textwrap.dedent(
    """
    key, _, _ = service.session_for(persona)
    print(key, flush=True)
    for number, _chunk in enumerate(service.send(key, question), start=1):
        print(number, flush=True)
    print("done", flush=True)
    """
)


def kill_mid_reply(
    database_url: str, model: OpenAIServer, after_chunks: int, script: str = STREAMING_VISITOR
) -> tuple[str, int]:
    """Start a visitor's process running `script` (which prints an id, then a count of chunks as
    they arrive), `kill -9` it once the count reached `after_chunks`; the id and the count."""
    model.chunk_delay = 0.1  # about 6 s for the whole reply
    Store(database_url).close()  # the schema, before the visitor's process opens it
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATABASE_URL"))}
    visitor = subprocess.Popen(
        [sys.executable, "-c", script, database_url, model.base_url, OWNER, QUESTION],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert visitor.stdout is not None
        key = visitor.stdout.readline().strip()
        assert key, visitor.stderr.read() if visitor.stderr else ""
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


#: A visitor's service comparing two columns in its own process: send QUESTION to both, print
#: the comparison's id (saved before the columns call the model), then, as the answers stream,
#: the number of words the shorter one has (the page's drawing keeps the comparison watched).
STREAMING_COMPARER = VISITOR + textwrap.dedent(
    """
    from core.service import ColumnChoice

    choices = [ColumnChoice("cook", "gpt-4o-mini", 4000), ColumnChoice("cook", "gpt-4.1-mini", 3000)]
    comparison = service.start_comparison({"cook": persona}, choices, blind=False)
    service.compare_send(question)
    print(service.comparison_id, flush=True)
    while True:
        view = comparison.snapshot()
        print(min(len(column.text.split()) for column in view.columns), flush=True)
        if not view.busy:
            break
        comparison.wait_for_change(view.version, timeout=0.5)
    print("done", flush=True)
    """
)


@contextlib.contextmanager
def saved_comparison_service(database_url: str, model: OpenAIServer) -> Iterator[VisitorService]:
    """A visitor's service in this process (the owner, the database and the model server of the
    visitor processes above); its comparison closed at the end."""
    environ = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url, "OPENAI_MAX_RETRIES": "0"}
    with Store(database_url) as store:
        service = VisitorService(
            Workspace(store, OWNER),
            Backends(),
            prices=load_model_table(),
            deployment=Deployment.from_settings({}, environ),
        )
        service.connect()
        try:
            yield service
        finally:
            service.close_comparison()


@contextlib.contextmanager
def saved_comparison(database_url: str, comparison_id: str, model: OpenAIServer) -> Iterator[VisitorService]:
    """A new visitor's service with the saved comparison open, as a reload of `?cmp=` opens it."""
    with saved_comparison_service(database_url, model) as service:
        assert service.open_comparison(comparison_id) is not None, service.take_notices()
        yield service


def test_kill_9_mid_compare_keeps_the_question_and_each_columns_answer_so_far(
    backend_url: str, openai_server: OpenAIServer
) -> None:
    # 3.5 s of answers: a draft of both saved at 2 s, the next due at 4 s.
    comparison_id, words_shown = kill_mid_reply(backend_url, openai_server, 35, STREAMING_COMPARER)
    with saved_comparison(backend_url, comparison_id, openai_server) as service:
        [(listed, title)] = service.saved_comparisons()
        assert listed == comparison_id and title.startswith("word0")
        assert service.comparison is not None
        view = service.comparison.snapshot()
        assert [r.text for r in view.rounds] == [QUESTION] and not view.busy
        whole = "You said: " + QUESTION
        for column in view.columns:
            question, answer = column.messages[1:]
            assert (question.role, question.content) == ("user", QUESTION)
            assert answer.role == "assistant" and answer.interrupted and whole.startswith(answer.content)
            assert 15 <= len(answer.content.split()) <= words_shown < 62, (answer.content, words_shown)
            assert column.state == "interrupted" and column.text == answer.content
            assert column.figures is not None and column.figures.reply_id == answer.id
            assert column.can_retry
        # Retry per column: the first asks again and gets the whole answer; the other keeps its part.
        openai_server.chunk_delay = 0.0
        service.compare_retry(0)
        assert service.comparison.wait(timeout=30)
        first, second = service.comparison.snapshot().columns
        assert first.state == "done" and first.text == whole
        assert second.state == "interrupted" and second.text != whole


def test_kill_9_before_any_compare_draft_keeps_the_question_pending_in_every_column(
    backend_url: str, openai_server: OpenAIServer
) -> None:
    comparison_id, _ = kill_mid_reply(backend_url, openai_server, 5, STREAMING_COMPARER)  # no draft yet
    with saved_comparison(backend_url, comparison_id, openai_server) as service:
        assert service.comparison is not None
        view = service.comparison.snapshot()
        assert [r.text for r in view.rounds] == [QUESTION]
        for column in view.columns:
            [question] = column.messages[1:]
            assert question.content == QUESTION and column.state == "interrupted" and not column.text
            assert column.can_retry
        openai_server.chunk_delay = 0.0
        service.compare_retry(1)
        assert service.comparison.wait(timeout=30)
        assert service.comparison.snapshot().columns[1].text == "You said: " + QUESTION


def test_a_streaming_comparison_is_saved_at_most_every_2_s_and_another_workspace_reads_it(
    backend_url: str, openai_server: OpenAIServer
) -> None:
    """While the columns stream, a second store on the same database (another server process
    would see the same) reads the comparison: the question at once, then each column's answer
    so far, the drafts at least 2 s apart until a column ends."""
    openai_server.chunk_delay = 0.08  # 62 deltas: about 5 s per column
    Store(backend_url).close()
    seen: list[tuple[float, tuple[int, ...]]] = []  # (when, each column's saved answer length)
    with saved_comparison_service(backend_url, openai_server) as service, Store(backend_url) as reader:
        columns = [ColumnChoice("cook", "gpt-4o-mini", 4000), ColumnChoice("cook", "gpt-4.1", 3000)]
        comparison = service.start_comparison({"cook": COOK}, columns, blind=False)
        assert comparison is not None
        started = time.monotonic()
        service.compare_send(QUESTION)
        comparison_id = service.comparison_id
        assert comparison_id is not None  # saved before the columns called the model

        def read() -> None:
            record = json.loads(reader.load_comparison(OWNER, comparison_id))
            lengths = tuple(
                sum(len(m["content"]) for m in column["conversation"]["messages"] if m["role"] == "assistant")
                for column in record["columns"]
            )
            if not seen or seen[-1][1] != lengths:
                seen.append((time.monotonic() - started, lengths))

        while comparison.busy:
            comparison.snapshot()  # drawn, as the page draws it
            read()
            time.sleep(0.05)
        service.save_comparison()  # the page's save once every column ended (nothing left by then)
        read()
    whole = len("You said: " + QUESTION)
    assert seen[0][1] == (0, 0) and seen[0][0] < 1.0  # the question, before any answer
    drafts = [(when, lengths) for when, lengths in seen if min(lengths) > 0 and max(lengths) < whole]
    assert len(drafts) >= 2, seen  # about 2 s and 4 s into 5 s of answers
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise([seen[0], *drafts])]
    # 2 s apart, less what a busy machine delays a poll (unthrottled, they would be 80 ms apart).
    assert all(gap >= 1.5 for gap in gaps), seen
    assert seen[-1][1] == (whole, whole), seen  # each answer saved as it ended
