"""The built-in offline model: deterministic, shows what it sees, reports usage as the API would."""

import re

from core.backends import ChatRequest
from core.conversation import Conversation
from core.offline import OfflineBackend
from core.session import ChatSession
from core.settings import ChatSettings
from core.tokens import count_prompt_tokens, tokenizer_for


def run(request: ChatRequest):
    stream = OfflineBackend().stream(request)
    chunks = list(stream)
    return stream, chunks


def test_reply_streams_in_chunks_and_reports_exact_usage():
    messages = [
        {"role": "system", "content": "您是一名美食家。"},
        {"role": "user", "content": "北京烤鸭怎么吃？"},
    ]
    stream, chunks = run(ChatRequest(messages=messages, model="gpt-4o-mini"))
    assert len(chunks) > 5
    assert "".join(chunks) == stream.text
    assert stream.finish_reason == "stop"
    assert stream.usage.prompt_tokens == count_prompt_tokens(messages, "gpt-4o-mini")
    assert stream.usage.completion_tokens == tokenizer_for("gpt-4o-mini").count_text(stream.text)
    assert "2 messages" in stream.text and f"{stream.usage.prompt_tokens} prompt tokens" in stream.text
    assert "北京烤鸭怎么吃？" in stream.text


def test_reply_is_deterministic():
    request = ChatRequest(messages=[{"role": "user", "content": "hello"}], model="gpt-4o")
    assert run(request)[0].text == run(request)[0].text


def test_reply_names_the_oldest_message_still_in_context():
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=150))
    session = ChatSession(conversation, OfflineBackend())
    for i in range(6):
        reply = "".join(session.send(f"question number {i}"))
    assert conversation.trim_events
    oldest_in_context = conversation.context_messages()[1]
    assert f"from the {oldest_in_context.role}" in reply
    assert all(t.reported_prompt_tokens == t.counted_prompt_tokens for t in conversation.turns)
    assert {t.usage_source for t in conversation.turns} == {"local"}


def test_reply_cap_cuts_the_reply_like_the_api():
    request = ChatRequest(messages=[{"role": "user", "content": "hello"}], model="gpt-4o", max_reply_tokens=7)
    stream, _ = run(request)
    assert stream.finish_reason == "length"
    assert stream.usage.completion_tokens == 7
    assert tokenizer_for("gpt-4o").count_text(stream.text) <= 8


def test_unknown_model_still_answers():
    stream, _ = run(ChatRequest(messages=[{"role": "user", "content": "hi"}], model="llama3.2"))
    assert stream.usage.prompt_tokens > 0 and stream.text


def test_reply_is_in_the_language_it_was_given():
    """The offline model speaks for the page: under Chinese its whole reply is Chinese (the user's
    own words quoted as they were), with the same figures."""
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=150))
    session = ChatSession(conversation, OfflineBackend(language="zh-CN"))
    for i in range(4):
        reply = "".join(session.send(f"question number {i}"))
    turn = conversation.turns[-1]
    assert reply.startswith("[离线模型] 我收到了") and f"{turn.counted_prompt_tokens} 个提示词 token" in reply
    assert "我仍能看到的最早一条消息来自" in reply and "你说：“question number 3”" in reply
    quoted = re.findall(r"“[^”]*”", reply)
    english = set(re.findall(r"[A-Za-z]+", re.sub(r"“[^”]*”", "", reply))) - {"token", "API"}
    assert quoted and not english, english
