"""The built-in offline model: deterministic, shows what it sees, reports usage as the API would."""

import re

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.counting.model_info import load_model_table
from core.counting.tokens import count_prompt_tokens, tokenizer_for
from core.providers.backends import ChatRequest
from core.providers.offline import OfflineBackend
from core.stats import totals


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


def test_it_serves_a_repeated_prefix_from_its_prompt_cache_as_a_plain_prefix_cache_does():
    settings = ChatSettings(model="gpt-4o-mini", context_budget=100_000)
    session = ChatSession(Conversation("You are a patient cook.", settings), OfflineBackend())
    for question in ("How long do I boil an egg?", "And a duck egg?", "煮鸡蛋要多久？"):
        list(session.send(question))
    first, second, third = session.conversation.turns
    priming = tokenizer_for("gpt-4o-mini").reply_priming
    # Nothing is cached at first; then each prompt shares all of the one before but its priming
    # (the next message's framing comes where the reply's priming was).
    assert first.reported_cached_tokens == 0
    assert second.reported_cached_tokens == first.prompt_tokens - priming
    assert third.reported_cached_tokens == second.prompt_tokens - priming
    # The dashboard's figures, offline: a hit rate, and what the cache saved at the model's prices.
    total = totals(session.conversation, load_model_table())
    assert total.cache_reported and total.cached_tokens == second.cached_tokens + third.cached_tokens
    assert 0.3 < total.cache_hit_rate < 1 and total.cache_saved is not None and total.cache_saved > 0


def test_a_trimmed_prefix_is_no_longer_served_from_cache():
    settings = ChatSettings(model="gpt-4o-mini", context_budget=400)
    session = ChatSession(Conversation("You cook.", settings), OfflineBackend())
    for i in range(6):
        list(session.send(f"Question {i}: how many minutes for {i + 2} eggs?"))
    conversation = session.conversation
    trimmed_at = conversation.trim_events[0].turn
    turn, before = conversation.turns[trimmed_at - 1], conversation.turns[trimmed_at - 2]
    question = conversation.message(turn.reply_id)
    question = conversation.messages[conversation.messages.index(question) - 1]
    # The oldest exchange left: the prompt is the same as before only up to the question now
    # where the old one was (a token cache shares the question's framing and its first words).
    system = conversation.messages[0].tokens
    assert system <= turn.cached_tokens < system + question.tokens < before.cached_tokens


def test_each_offline_backend_has_its_own_cache():
    request = ChatRequest(messages=[{"role": "user", "content": "hello"}], model="gpt-4o-mini")
    backend = OfflineBackend()
    list(backend.stream(request))
    again = backend.stream(request)
    list(again)
    assert again.usage is not None and again.usage.cached_prompt_tokens == again.usage.prompt_tokens
    fresh = OfflineBackend().stream(request)
    list(fresh)
    assert fresh.usage is not None and fresh.usage.cached_prompt_tokens == 0
