"""Every rule of a turn, on ChatSession, without Streamlit: with the scripted backend, the offline
model, and the real SDK over HTTP against the local OpenAI-compatible server."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from core.chat.conversation import Conversation, MessageState
from core.chat.session import CONTINUE_PROMPT, REQUEST_GOING_OUT, ChatSession
from core.chat.settings import ChatSettings
from core.counting.tokens import count_prompt_tokens
from core.errors import (
    AuthenticationFailed,
    ConversationStateError,
    EmptyReply,
    PromptTooLong,
    ServerError,
    StreamInterrupted,
)
from core.personas.persona import load_personas
from core.providers.backends import OpenAIBackend, Usage
from core.providers.offline import OfflineBackend
from core.providers.scripted import ScriptedBackend, ScriptedReply
from core.service import StartedReply
from tests.conftest import REPO_ROOT
from tests.openai_server import Fault, OpenAIServer

SYSTEM = "You are a terse assistant."


def new_session(backend: ScriptedBackend | None = None, **settings: object) -> ChatSession:
    options: dict[str, object] = {"model": "gpt-4o-mini", "context_budget": 1000, **settings}
    conversation = Conversation(SYSTEM, ChatSettings.model_validate(options))
    return ChatSession(conversation, backend or ScriptedBackend())


def roles(session: ChatSession) -> list[tuple[str, str]]:
    return [(m.role, m.state) for m in session.conversation.messages]


def test_send_streams_the_reply_then_records_the_turn() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(chunks=["Hel", "lo ", "there"]))
    session = new_session(backend)
    chunks = session.send("hi")
    # The user message is added at once; the turn only when the reply is complete.
    assert session.conversation.pending_user_message.content == "hi"
    assert session.last_turn is None
    assert list(chunks) == ["Hel", "lo ", "there"]
    turn = session.last_turn
    assert turn is not None and turn.number == 1 and turn.finish_reason == "stop"
    assert (
        turn.reported_prompt_tokens
        == turn.counted_prompt_tokens
        == count_prompt_tokens(backend.requests[0].messages, "gpt-4o-mini")
    )
    assert turn.usage_source == "server"
    assert turn.reply_id == session.conversation.messages[-1].id
    assert session.conversation.messages[-1].content == "Hello there"
    assert session.error is None and not session.replying


def test_the_request_carries_the_conversations_settings() -> None:
    backend = ScriptedBackend().enqueue("ok")
    session = new_session(backend, max_reply_tokens=77, sampling={"temperature": 0.3})
    list(session.send("hi"))
    request = backend.requests[0]
    assert (request.model, request.max_reply_tokens, request.sampling.temperature) == ("gpt-4o-mini", 77, 0.3)
    session.update_settings(model="gpt-4.1", max_reply_tokens=5)
    backend.enqueue("ok")
    list(session.send("again"))
    assert (backend.requests[1].model, backend.requests[1].max_reply_tokens) == ("gpt-4.1", 5)


def test_a_refused_call_keeps_the_message_pending_and_retry_sends_it() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(error=ServerError("boom", status_code=500)), "fine")
    session = new_session(backend)
    with pytest.raises(ServerError):
        list(session.send("question"))
    assert isinstance(session.error, ServerError) and session.error.status_code == 500
    assert session.conversation.turns == [] and session.can_retry
    assert roles(session) == [("system", "context"), ("user", "context")]
    assert list(session.retry()) == ["fine"]
    assert session.error is None
    assert backend.requests[0].messages == backend.requests[1].messages
    assert [m.content for m in session.conversation.messages[1:]] == ["question", "fine"]


def test_a_reply_broken_off_keeps_its_partial_text_marked_interrupted() -> None:
    error = StreamInterrupted("the connection broke")
    backend = ScriptedBackend().enqueue(
        ScriptedReply(chunks=["Once ", "upon ", "a time"], error=error, error_after_chunks=2)
    )
    session = new_session(backend)
    received = []
    with pytest.raises(StreamInterrupted):
        for chunk in session.send("story"):
            received.append(chunk)
    assert received == ["Once ", "upon "]
    reply = session.conversation.messages[-1]
    assert (reply.role, reply.content, reply.interrupted) == ("assistant", "Once upon ", True)
    assert session.last_turn.interrupted and session.last_turn.reported_prompt_tokens is None
    assert session.error is error and not session.replying


def test_an_empty_reply_is_an_error_and_records_nothing() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(text="", finish_reason="length"))
    session = new_session(backend)
    with pytest.raises(EmptyReply, match="Raise the reply cap") as caught:
        list(session.send("think hard"))
    assert caught.value.finish_reason == "length"
    assert session.conversation.turns == [] and session.can_retry


def test_too_long_sends_nothing_and_keeps_the_text() -> None:
    backend = ScriptedBackend()
    session = new_session(backend, context_budget=64)
    with pytest.raises(PromptTooLong):
        list(session.send("spaghetti " * 100))
    assert backend.requests == []
    assert session.conversation.pending_user_message.content == "spaghetti " * 100
    assert isinstance(session.error, PromptTooLong)


def test_stop_keeps_what_arrived_and_hangs_up() -> None:
    gate = threading.Event()
    backend = ScriptedBackend().enqueue(ScriptedReply(chunks=["one ", "two ", "three"], gate=gate))
    session = new_session(backend)
    gate.set()
    reply = session.send("count")
    assert next(reply) == "one "
    assert session.replying
    turn = session.stop()
    assert turn is not None and turn.interrupted
    assert session.conversation.messages[-1].content == "one "
    assert not session.replying
    # The abandoned iterator yields nothing more and records nothing more.
    assert list(reply) == []
    assert len(session.conversation.turns) == 1
    assert session.stop() is None


def test_an_abandoned_reply_is_stopped_by_the_next_message() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(chunks=["a ", "b"]), "second answer")
    session = new_session(backend)
    first = session.send("first")
    next(first)
    list(session.send("second"))
    contents = [(m.role, m.content, m.interrupted) for m in session.conversation.messages[1:]]
    assert contents == [
        ("user", "first", False),
        ("assistant", "a ", True),
        ("user", "second", False),
        ("assistant", "second answer", False),
    ]
    first.close()  # the old generator closing late must not touch the new turn
    assert len(session.conversation.turns) == 2 and not session.conversation.turns[-1].interrupted


def test_regenerate_sets_the_answer_aside_and_asks_again() -> None:
    backend = ScriptedBackend().enqueue("first", "second")
    session = new_session(backend)
    list(session.send("q"))
    assert session.can_regenerate
    list(session.regenerate())
    assert [m.state for m in session.conversation.messages] == ["context", "context", "replaced", "context"]
    assert backend.requests[1].messages == backend.requests[0].messages


def test_a_reply_cut_by_the_reply_cap_is_marked_and_can_be_continued() -> None:
    backend = ScriptedBackend().enqueue(
        ScriptedReply(text="The first half", finish_reason="length"), " and the rest."
    )
    session = new_session(backend)
    list(session.send("long answer please"))
    cut = session.conversation.messages[-1]
    assert cut.cut_off and session.last_turn.cut_by_reply_cap and session.can_continue
    list(session.continue_reply())
    sent = backend.requests[1].messages
    assert sent[-2] == {"role": "assistant", "content": "The first half"}
    assert sent[-1] == {"role": "user", "content": CONTINUE_PROMPT}
    ask = session.conversation.messages[-2]
    assert ask.automatic and ask.role == "user"
    assert not session.can_continue
    with pytest.raises(ConversationStateError, match="not cut off"):
        session.continue_reply()


def test_a_new_question_after_a_failure_leaves_the_old_one_unanswered() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(error=AuthenticationFailed("bad key")), "ok")
    session = new_session(backend)
    with pytest.raises(AuthenticationFailed):
        list(session.send("lost"))
    assert session.error is not None and session.error.retryable is False
    list(session.send("found"))
    assert [m.state for m in session.conversation.messages[1:]] == [
        MessageState.UNANSWERED,
        MessageState.CONTEXT,
        MessageState.CONTEXT,
    ]
    assert [m["content"] for m in backend.requests[1].messages] == [SYSTEM, "found"]


def test_usage_of_a_local_model_is_marked_local() -> None:
    session = new_session()
    session.backend = OfflineBackend()
    list(session.send("hello"))
    assert session.last_turn.usage_source == "local"
    assert session.last_turn.reported_prompt_tokens == session.last_turn.counted_prompt_tokens


def test_a_reply_without_usage_records_none() -> None:
    backend = ScriptedBackend().enqueue(ScriptedReply(text="hi", usage=None))
    session = new_session(backend)
    list(session.send("hello"))
    assert session.last_turn.usage_source is None and session.last_turn.reported_prompt_tokens is None


def test_reported_usage_is_kept_as_reported() -> None:
    backend = ScriptedBackend().enqueue(
        ScriptedReply(text="hi", usage=Usage(prompt_tokens=999, completion_tokens=3))
    )
    session = new_session(backend)
    list(session.send("hello"))
    assert (session.last_turn.reported_prompt_tokens, session.last_turn.reply_tokens) == (999, 3)


def test_trimming_happens_in_the_session_and_never_overflows() -> None:
    backend = ScriptedBackend()
    session = new_session(backend, context_budget=150)
    for i in range(10):
        backend.enqueue(f"answer {i} " + "tasty " * 10)
        list(session.send(f"question {i} " + "noodles " * 10))
    assert session.conversation.trim_events
    for request in backend.requests:
        assert count_prompt_tokens(request.messages, "gpt-4o-mini") <= 150
        request_roles = [m["role"] for m in request.messages]
        assert all(a != b for a, b in itertools.pairwise(request_roles))


def test_a_pinned_exchange_survives_trimming() -> None:
    backend = ScriptedBackend()
    session = new_session(backend, context_budget=150)
    backend.enqueue("remember: the code word is dumpling")
    list(session.send("pin this"))
    session.conversation.pin(session.conversation.messages[1].id)
    for i in range(8):
        backend.enqueue(f"answer {i} " + "tasty " * 10)
        list(session.send(f"question {i} " + "noodles " * 10))
    assert session.conversation.trim_events
    last_sent = [m["content"] for m in backend.requests[-1].messages]
    assert "pin this" in last_sent and "remember: the code word is dumpling" in last_sent
    assert session.conversation.messages[1].state is MessageState.CONTEXT


def test_start_takes_the_personas_settings() -> None:
    persona = load_personas(REPO_ROOT / "personas").personas["foodie"]
    session = ChatSession.start(persona, OfflineBackend())
    settings = session.settings
    assert (settings.model, settings.context_budget, settings.max_reply_tokens) == (
        persona.model,
        persona.context_budget,
        persona.max_reply_tokens,
    )
    assert session.conversation.system_prompt == persona.system_prompt
    assert session.conversation.persona_id == "foodie"


# --- over the real SDK -------------------------------------------------------------------------


def http_session(server: OpenAIServer, **settings: object) -> ChatSession:
    session = new_session(**settings)
    session.backend = OpenAIBackend("sk-test", server.base_url, max_retries=0, timeout=5)
    return session


def test_one_backend_learns_that_a_server_rejects_stream_options(openai_server: OpenAIServer) -> None:
    openai_server.rejects_stream_options = True
    session = http_session(openai_server)
    for n, text in enumerate(("one", "two", "three"), start=1):
        assert "".join(session.send(text)) == f"You said: {text}"
        # Two requests for the first turn (refused, then without the option), one per turn after.
        assert len(openai_server.chat_requests) == n + 1
    assert session.last_turn.usage_source is None  # such servers send no usage


def test_a_cut_stream_over_http_keeps_the_partial_reply(openai_server: OpenAIServer) -> None:
    session = http_session(openai_server)
    openai_server.enqueue(Fault(reply="one two three four five", cut_after=2))
    with pytest.raises(StreamInterrupted):
        list(session.send("go"))
    assert session.conversation.messages[-1].content == "one two "
    assert session.conversation.messages[-1].interrupted
    assert "".join(session.send("again")) == "You said: again"


def test_the_reply_cap_cut_over_http_is_recorded(openai_server: OpenAIServer) -> None:
    session = http_session(openai_server, max_reply_tokens=3)
    text = "".join(session.send("a rather long question to echo back"))
    assert session.last_turn.finish_reason == "length" and session.can_continue
    assert session.conversation.messages[-1].content == text


# --- policy "summarize" ------------------------------------------------------------------------


def test_a_summarize_conversation_runs_offline_end_to_end() -> None:
    session = new_session(context_policy="summarize", context_budget=500)
    session.backend = OfflineBackend()
    for i in range(14):
        reply = "".join(session.send(f"Question {i}: how do I cook dish number {i} well?"))
        assert reply.startswith("[Offline model]")
        turn = session.last_turn
        assert turn is not None and turn.counted_prompt_tokens <= 500
        assert turn.reported_prompt_tokens == turn.counted_prompt_tokens  # what was sent is what was counted
    conversation = session.conversation
    folds = [e for e in conversation.summary_events if not e.fallback]
    assert folds and not conversation.trim_events
    assert all(e.usage_source == "local" and e.summarizer_prompt_tokens for e in folds)
    assert "a summary of the earlier conversation" in conversation.messages[-1].content
    summary = conversation.summary
    assert summary is not None and summary.text.startswith("Summary (offline model):")
    assert session.last_turn.summary_tokens == summary.tokens > 0
    summarized = {m.id for m in conversation.messages if m.state is MessageState.SUMMARIZED}
    assert summarized == {i for e in folds for i in e.folded}


def test_summaries_are_asked_of_the_summarizer_model_without_sampling() -> None:
    backend = ScriptedBackend()
    session = new_session(
        backend,
        context_policy="summarize",
        context_budget=10_000,
        summarizer_model="gpt-4.1-nano",
        sampling={"temperature": 0.9},
    )
    for i in range(3):
        backend.enqueue(f"answer {i} " + "word " * 20)
        list(session.send(f"question {i} " + "word " * 20))
    session.update_settings(context_budget=170)
    backend.enqueue("The user asked three questions.", "final answer")
    list(session.send("question 3"))
    summary_request, chat_request = backend.requests[-2:]
    assert summary_request.model == "gpt-4.1-nano" and summary_request.sampling.temperature is None
    assert summary_request.max_reply_tokens >= 170 // 4
    assert chat_request.model == "gpt-4o-mini" and chat_request.sampling.temperature == 0.9
    assert chat_request.messages[1]["content"].endswith("The user asked three questions.")
    event = session.conversation.summary_events[-1]
    assert event.summarizer_model == "gpt-4.1-nano" and event.usage_source == "server"
    assert event.summarizer_prompt_tokens == count_prompt_tokens(summary_request.messages, "gpt-4.1-nano")


def test_a_failed_summary_drops_instead_and_the_reply_still_comes() -> None:
    backend = ScriptedBackend()
    session = new_session(backend, context_policy="summarize", context_budget=10_000)
    for i in range(3):
        backend.enqueue(f"answer {i} " + "word " * 20)
        list(session.send(f"question {i} " + "word " * 20))
    session.update_settings(context_budget=170)
    backend.enqueue(ScriptedReply(error=ServerError("summarizer down", status_code=503)), "the answer")
    assert "".join(session.send("question 3")) == "the answer"
    assert session.error is None
    event = session.conversation.summary_events[-1]
    assert event.fallback and "summarizer down" in event.fallback_reason
    assert session.conversation.trim_events[-1].dropped == event.dropped
    assert session.last_turn.counted_prompt_tokens <= 170


def test_a_separate_summarizer_backend_can_write_the_summaries() -> None:
    chat_backend, summarizer = ScriptedBackend(), ScriptedBackend()
    session = new_session(chat_backend, context_policy="summarize", context_budget=10_000)
    session.summarizer_backend = summarizer
    for i in range(3):
        chat_backend.enqueue(f"answer {i} " + "word " * 20)
        list(session.send(f"question {i} " + "word " * 20))
    session.update_settings(context_budget=170)
    chat_backend.enqueue("ok")
    summarizer.enqueue("A short summary.")
    list(session.send("question 3"))
    assert len(summarizer.requests) == 1 and session.conversation.summary.text == "A short summary."


def test_start_takes_the_personas_context_policy_and_summarizer(tmp_path) -> None:
    source = (REPO_ROOT / "personas" / "foodie.yaml").read_text(encoding="utf-8")
    (tmp_path / "foodie.yaml").write_text(
        source + "context_policy: summarize\nsummarizer_model: gpt-4.1-nano\n", encoding="utf-8"
    )
    catalog = load_personas(tmp_path)
    assert not catalog.errors
    session = ChatSession.start(catalog.personas["foodie"], OfflineBackend())
    assert session.settings.context_policy == "summarize" and session.policy.name == "summarize"
    assert session.settings.summarizer_model == "gpt-4.1-nano"
    default = ChatSession.start(load_personas(REPO_ROOT / "personas").personas["foodie"], OfflineBackend())
    assert default.settings.context_policy == "drop_oldest" and default.settings.summarizer_model is None


def test_the_request_is_announced_on_the_turns_thread_after_the_fit() -> None:
    """`REQUEST_GOING_OUT` is called once per turn, after the policy's fit (the trim is recorded)
    and before the backend is asked: what `core.service.StartedReply` waits for."""
    session = ChatSession(
        Conversation("sys", ChatSettings(model="gpt-4o-mini", context_budget=120)), OfflineBackend()
    )
    for number in range(3):
        "".join(session.send(f"question {number} " + "about noodles " * 8))
    announced: list[int] = []
    token = REQUEST_GOING_OUT.set(lambda: announced.append(len(session.conversation.trim_events)))
    try:
        reply = session.send("one more question " + "about noodles " * 8)
        assert announced == []  # nothing runs before the first chunk is asked for
        next(reply)
        "".join(reply)
        # Announced once, with every trim of the turn already made.
        assert announced == [len(session.conversation.trim_events)] and announced[0] > 0
    finally:
        REQUEST_GOING_OUT.reset(token)


def test_a_started_reply_holds_its_caller_until_the_request_goes_out() -> None:
    events: list[str] = []

    def chunks() -> Iterator[str]:
        time.sleep(0.05)  # the policy's fit
        events.append("fit")
        announce = REQUEST_GOING_OUT.get()
        assert announce is not None  # set on the thread that fetches the first chunk
        announce()
        time.sleep(0.1)  # the server thinks
        events.append("first chunk")
        yield "a"

    reply = StartedReply("key", chunks())
    events.append("caller goes on")
    assert next(reply) == "a"
    assert events == ["fit", "caller goes on", "first chunk"]
