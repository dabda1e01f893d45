"""Counts for models that are not OpenAI's: the server's own tokenizer where it offers one (vLLM,
llama.cpp), a calibrated estimate where it does not (Ollama, LM Studio), and in every case no
prompt over the budget ever reaching the server.

The local test server bills like such a server (`Billing`): another tokenizer than the o200k the
dashboard estimates with, and a chat template's framing. Turns run through `ChatSession` with the
real SDK over HTTP, and every prompt the server received is recounted with its own billing.
"""

from __future__ import annotations

import json

import pytest

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings
from core.counting import calibration as cal
from core.counting.calibration import (
    PRIOR_PARAMS,
    CalibratedTokenizer,
    Calibration,
    Features,
    cap_to_window,
    shrink,
)
from core.counting.methods import RECOUNT_TOLERANCE, ServerTokenizer, counting_for
from core.counting.server_tokens import server_root
from core.counting.tokens import (
    METHOD_SERVER,
    METHOD_TIKTOKEN,
    METHOD_UNCALIBRATED,
    count_prompt_tokens,
    tokenizer_for,
)
from core.errors import PromptTooLong
from core.providers.backends import OpenAIBackend
from tests.openai_server import CJK_CHARS, Billing, OpenAIServer

MODEL = "qwen3"
SYSTEM = "你是一位热情的美食向导，熟悉中国各地的小吃和家常菜。回答要具体、亲切。"
QUESTIONS = [
    "北京烤鸭怎么吃？",
    "请用三句话介绍一下四川火锅的历史，以及为什么它这么辣。",
    "广东早茶有哪些必点的点心？虾饺、烧卖、叉烧包各有什么讲究？",
    "我想学做红烧肉，需要准备哪些材料，火候怎么掌握？",
    "上海的生煎包和小笼包有什么区别？",
    "西安的肉夹馍为什么叫这个名字？",
    "云南过桥米线的传说是什么？",
    "杭州西湖醋鱼到底好不好吃？很多人说它是黑暗料理。",
    "天津狗不理包子现在还值得一试吗？",
    "兰州牛肉面的一清二白三红四绿五黄是什么意思？",
    "湖南人为什么那么爱吃辣？",
    "武汉热干面的芝麻酱怎么调才香？",
]
ENGLISH_SYSTEM = "You are a warm food guide. Answer in Chinese."
REPLIES = [
    "先把鸭皮蘸一点白糖，再用荷叶饼卷上葱丝、黄瓜条和甜面酱，一口下去外酥里嫩。",
    "火锅起源于重庆码头的船工，用牛油和辣椒驱寒祛湿，后来传遍了四川。",
    "虾饺要皮薄透亮，烧卖要肉馅紧实，叉烧包要面皮开花，这是早茶的三大天王。",
    "五花肉、冰糖、生抽老抽、姜葱和八角；先焯水再炒糖色，小火慢炖一个小时。",
    "生煎包底部煎得金黄酥脆，小笼包是蒸的，皮更薄、汤汁更多。",
    "其实是“肉夹于馍”的古汉语说法，腊汁肉夹在白吉馍里。",
]


def serve(server: OpenAIServer, **billing: object) -> Billing:
    server.models.append(MODEL)
    server.billing = Billing(**billing)  # type: ignore[arg-type]
    return server.billing


def chat(server: OpenAIServer, budget: int, *, reply_cap: int = 200, system: str = SYSTEM) -> ChatSession:
    conversation = Conversation(
        system, ChatSettings(model=MODEL, context_budget=budget, max_reply_tokens=reply_cap)
    )
    return ChatSession(conversation, OpenAIBackend("sk-test", server.base_url, max_retries=0))


def run_turns(session: ChatSession, server: OpenAIServer, turns: int) -> list[tuple[int, int]]:
    """`turns` turns in Chinese; (counted, reported) prompt tokens of each."""
    results = []
    for number in range(turns):
        server.reply(REPLIES[number % len(REPLIES)])
        assert "".join(session.send(QUESTIONS[number % len(QUESTIONS)])), session.error
        turn = session.last_turn
        assert turn is not None and turn.reported_prompt_tokens is not None
        results.append((turn.counted_prompt_tokens, turn.reported_prompt_tokens))
    return results


def billed_prompts(server: OpenAIServer) -> list[int]:
    """Every prompt the server received, counted as the server bills it."""
    assert server.billing is not None
    return [server.billing.prompt_tokens(request.messages) for request in server.chat_requests]


def tokenize_requests(server: OpenAIServer) -> list[str]:
    return [r.path for r in server.requests if r.path in ("/tokenize", "/apply-template")]


# --- the server's tokenizer ----------------------------------------------------------------

EXACT_MODES = [
    pytest.param({"tokenize": "vllm"}, True, id="vllm"),
    pytest.param({"tokenize": "llama.cpp"}, True, id="llama.cpp"),
    pytest.param({"tokenize": "vllm", "template": "gemma"}, False, id="vllm-gemma-not-additive"),
    pytest.param({"tokenize": "llama.cpp", "encoding": CJK_CHARS}, True, id="llama.cpp-cjk-chars"),
]


@pytest.mark.parametrize(("billing", "additive"), EXACT_MODES)
def test_a_tokenize_endpoint_makes_every_count_exact_and_no_prompt_goes_over(
    openai_server: OpenAIServer, billing: dict[str, object], additive: bool
) -> None:
    serve(openai_server, **billing)
    session = chat(openai_server, budget=420)
    results = run_turns(session, openai_server, 12)
    conversation = session.conversation
    assert conversation.trim_events, "the budget must have made the policy trim"
    assert [counted for counted, _ in results] == [reported for _, reported in results]
    assert all(turn.count_exact for turn in conversation.turns)
    assert conversation.tokenizer.method == METHOD_SERVER
    known = session.counting.server_model(MODEL)
    assert known is not None and known.kind == billing["tokenize"] and known.additive is additive
    assert max(billed_prompts(openai_server)) <= 420
    # Between turns the gauge reads the server's count of what the next call would send.
    expected = openai_server.billing.prompt_tokens(conversation.api_messages())  # type: ignore[union-attr]
    assert conversation.prompt_tokens == expected


def test_the_server_is_asked_only_for_what_is_new(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize="vllm")
    session = chat(openai_server, budget=100_000)
    run_turns(session, openai_server, 1)
    # Once per server and model, the probe: [s] finds the endpoint, [s,u,a], [s,u,a,u2] and
    # [s,u2] measure the framing. Then the turn: the system prompt, the user message, the reply.
    assert len(tokenize_requests(openai_server)) == 4 + 3
    before = len(tokenize_requests(openai_server))
    run_turns(session, openai_server, 4)
    # Additive framing: one count for the user message, one for the reply, per turn.
    assert len(tokenize_requests(openai_server)) - before == 4 * 2
    # Recounting everything with the cached server counts changes nothing.
    conversation = session.conversation
    total = conversation.prompt_tokens
    conversation.recount()
    assert conversation.prompt_tokens == total


def test_the_context_window_caps_the_budget(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize="vllm", max_model_len=500)
    session = chat(openai_server, budget=4096, reply_cap=100)
    results = run_turns(session, openai_server, 10)
    counting = session.counting
    assert counting.context_window(MODEL) == 500
    assert session.conversation.settings.context_budget == 4096
    assert session.conversation.context_budget == 400  # the window less the reply cap
    # The server refuses a prompt plus reply cap over its window; none was sent.
    assert max(billed_prompts(openai_server)) <= 400
    assert all(counted == reported for counted, reported in results)


def test_the_window_comes_from_v1_models_where_there_is_no_tokenize_endpoint(
    openai_server: OpenAIServer,
) -> None:
    serve(openai_server, tokenize=None, max_model_len=600)
    session = chat(openai_server, budget=4096, reply_cap=100)
    run_turns(session, openai_server, 1)
    assert session.counting.context_window(MODEL) == 600
    budget = session.conversation.context_budget
    assert budget == shrink(500, session.conversation.tokenizer.fit.margin)  # type: ignore[attr-defined]


def test_a_server_failing_to_count_leaves_the_estimate_in_charge(openai_server: OpenAIServer) -> None:
    billing = serve(openai_server, tokenize="vllm")
    session = chat(openai_server, budget=420)
    run_turns(session, openai_server, 3)
    billing.tokenize_status = 503
    results = run_turns(session, openai_server, 6)
    assert len(results) == 6 and session.error is None
    conversation = session.conversation
    assert isinstance(conversation.tokenizer, CalibratedTokenizer)
    assert conversation.tokenizer.method.startswith("calibrated estimate")
    assert not conversation.turns[-1].count_exact
    assert max(billed_prompts(openai_server)) <= 420
    # After the wait the server is asked again.
    known = session.counting.server_model(MODEL)
    assert known is not None and known.failed_until is not None
    billing.tokenize_status = 200
    known.failed_until = 0.0
    run_turns(session, openai_server, 1)
    assert isinstance(conversation.tokenizer, ServerTokenizer)
    assert conversation.turns[-1].count_exact


def test_a_server_that_stops_offering_the_endpoint_is_calibrated(openai_server: OpenAIServer) -> None:
    billing = serve(openai_server, tokenize="vllm")
    session = chat(openai_server, budget=420)
    run_turns(session, openai_server, 2)
    billing.tokenize = None  # now /tokenize is a 404
    run_turns(session, openai_server, 6)
    assert session.counting.server_model(MODEL).kind is None  # type: ignore[union-attr]
    assert session.conversation.tokenizer.method.startswith("calibrated estimate")
    assert max(billed_prompts(openai_server)) <= 420


def test_tokenize_requests_go_through_the_chat_backends_client(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize="vllm")
    run_turns(chat(openai_server, budget=1000), openai_server, 1)
    tokenize = [r for r in openai_server.requests if r.path == "/tokenize"]
    assert tokenize and all(r.headers.get("authorization") == "Bearer sk-test" for r in tokenize)
    assert tokenize[-1].body["model"] == MODEL and tokenize[-1].body["add_generation_prompt"] is True


def test_server_root_drops_only_a_trailing_v1() -> None:
    assert server_root("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert server_root("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert server_root("https://example.com/api") == "https://example.com/api"


# --- the calibrated estimate -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "system"),
    [
        pytest.param("cl100k_base", SYSTEM, id="cl100k-chinese"),
        pytest.param(CJK_CHARS, SYSTEM, id="cjk-chars-chinese"),
        pytest.param("cl100k_base", ENGLISH_SYSTEM, id="cl100k-english-system"),
        pytest.param(CJK_CHARS, ENGLISH_SYSTEM, id="cjk-chars-english-system"),
    ],
)
def test_without_an_endpoint_the_estimate_is_within_3_percent_from_the_third_turn(
    openai_server: OpenAIServer, encoding: str, system: str
) -> None:
    serve(openai_server, tokenize=None, encoding=encoding)
    session = chat(openai_server, budget=450, system=system)
    results = run_turns(session, openai_server, 12)
    errors = [abs(counted - reported) / reported for counted, reported in results]
    assert session.conversation.trim_events, "the budget must have made the policy trim"
    assert max(errors[2:]) <= 0.03, [f"{e:.1%}" for e in errors]
    assert errors[0] > 0.05  # o200k alone is far off this tokenizer: the calibration did the work
    assert max(billed_prompts(openai_server)) <= 450
    method = session.conversation.tokenizer.method
    assert method.startswith("calibrated estimate (±") and method.endswith("%)")
    assert tokenize_requests(openai_server) == ["/tokenize", "/apply-template"]  # probed once


#: Questions and replies that mix Chinese, English, emoji, digits and punctuation, whose classes
#: tokenizers split differently.
MIXED_QUESTIONS = [
    "北京烤鸭 🦆 怎么吃？How many pancakes per person, 3 or 4?",
    "Explain 四川火锅 in 2 sentences 🌶️🌶️ and list 5 ingredients.",
    "广东早茶 dim sum: 虾饺 vs 烧卖 — which is better at 10:30 am? 🥟",
    "I have 500g 五花肉 and 2 hours ⏰; 红烧肉 recipe please, step 1, 2, 3.",
    "生煎包 or 小笼包? Rate each 1–10 ⭐ and explain why in English.",
    "What does 肉夹馍 mean literally? Is it 100% pork? 🐷🐷🐷",
    "过桥米线 legend: tell it in 3 lines, add 2 emoji 🍜🌉 at the end.",
    "Is 西湖醋鱼 really 'dark cuisine'? Score it 0–5 and give 3 reasons!!!",
    "狗不理包子 costs ¥45 for 8 — worth it in 2024? Yes/No + 1 sentence.",
    "兰州牛肉面 一清二白三红四绿五黄 = ? Translate each of the 5 items.",
    "Why do Hunan people 爱吃辣? Give 4 bullet points 🔥🔥🔥🔥.",
    "热干面 sesame paste ratio: 3:1 or 2:1? Reply with numbers only 1234567890.",
]
MIXED_REPLIES = [
    "Wrap 3 slices in a pancake 🫓 with 葱丝 and 甜面酱; 2–3 pancakes each.",
    "重庆 boatmen invented it around 1900 🚣; beef tallow, 花椒, 辣椒, 姜, 蒜.",
    "虾饺 wins 🏆 for thin skin; 烧卖 at 10:30 is fine too, order both (¥28 + ¥24).",
    "Blanch 500g pork 5 min, caramelise 30g 冰糖, braise 90 min with 生抽 15ml ✅.",
    "生煎包 8/10, 小笼包 9/10 😋 because the soup is richer.",
    "“肉夹于馍” — meat held in bread; usually 100% 腊汁肉 (pork) 🐖.",
]


@pytest.mark.parametrize("system", [SYSTEM, ENGLISH_SYSTEM], ids=["chinese-system", "english-system"])
@pytest.mark.parametrize("encoding", ["cl100k_base", CJK_CHARS])
def test_mixed_scripts_are_within_3_percent_from_the_third_turn(
    openai_server: OpenAIServer, encoding: str, system: str
) -> None:
    serve(openai_server, tokenize=None, encoding=encoding)
    session = chat(openai_server, budget=600, system=system)
    errors = []
    for number in range(12):
        openai_server.reply(MIXED_REPLIES[number % len(MIXED_REPLIES)])
        assert "".join(session.send(MIXED_QUESTIONS[number])), session.error
        turn = session.last_turn
        assert turn is not None and turn.reported_prompt_tokens
        errors.append(
            abs(turn.counted_prompt_tokens - turn.reported_prompt_tokens) / turn.reported_prompt_tokens
        )
    assert max(errors[2:]) <= 0.03, [f"{e:.1%}" for e in errors]
    assert session.conversation.trim_events and max(billed_prompts(openai_server)) <= 600
    status = session.counting.describe(session.conversation)
    assert status.error is not None and status.error <= 0.03 and status.calibrated_turns == 12


def test_the_margin_keeps_every_prompt_under_budget_while_learning(openai_server: OpenAIServer) -> None:
    # A tight budget from the second turn on: the estimate is still learning when it trims.
    serve(openai_server, tokenize=None)
    session = chat(openai_server, budget=160)
    run_turns(session, openai_server, 8)
    assert len(session.conversation.trim_events) >= 4
    assert max(billed_prompts(openai_server)) <= 160


def test_the_calibration_travels_with_the_export(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize=None)
    session = chat(openai_server, budget=4000)
    run_turns(session, openai_server, 4)
    conversation = session.conversation
    data = conversation.to_dict()
    assert len(data["calibration"]["models"][MODEL]["observations"]) == 4
    copy = Conversation.from_json(json.dumps(data))
    assert copy.calibration.fit(MODEL) == conversation.calibration.fit(MODEL)
    # On a new backend (the page reopened it), the counting is calibrated before any turn.
    backend = OpenAIBackend("sk-test", openai_server.base_url, max_retries=0)
    counting_for(backend).attach(copy)
    assert copy.tokenizer.method == conversation.tokenizer.method
    # The same fit; the original keeps counts from an earlier fit until one moves them by more
    # than RECOUNT_TOLERANCE, so the two agree within it.
    assert (
        abs(copy.prompt_tokens - conversation.prompt_tokens) <= RECOUNT_TOLERANCE * conversation.prompt_tokens
    )


def test_a_conversation_without_calibration_exports_as_before() -> None:
    conversation = Conversation("sys", ChatSettings(model=MODEL, context_budget=100))
    assert "calibration" not in conversation.to_dict()
    assert Conversation.from_dict(conversation.to_dict()).calibration.fit(MODEL).turns == 0


def test_an_openai_model_is_counted_by_tiktoken_without_asking(openai_server: OpenAIServer) -> None:
    openai_server.billing = None
    conversation = Conversation("sys", ChatSettings(model="gpt-4o-mini", context_budget=1000))
    session = ChatSession(conversation, OpenAIBackend("sk-test", openai_server.base_url, max_retries=0))
    list(session.send("北京烤鸭怎么吃？"))
    assert conversation.tokenizer == tokenizer_for("gpt-4o-mini")
    assert conversation.tokenizer.method == METHOD_TIKTOKEN
    assert [r.path for r in openai_server.requests] == ["/v1/chat/completions"]
    turn = session.last_turn
    assert turn is not None and turn.counted_prompt_tokens == turn.reported_prompt_tokens


# --- units ---------------------------------------------------------------------------------


def test_the_uncalibrated_estimate_is_tiktokens_o200k_count() -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello, 北京!"}]
    estimate = Calibration().tokenizer(tokenizer_for(MODEL))
    assert estimate.params == PRIOR_PARAMS and estimate.method == METHOD_UNCALIBRATED
    counted = sum(estimate.count_message(m) for m in messages) + estimate.reply_priming
    assert counted == count_prompt_tokens(messages, MODEL)
    assert estimate.prompt_budget(1000, 100) == shrink(1000, cal.MARGIN_UNCALIBRATED)


def observe(calibration: Calibration, reported: int, predicted: int, basis: int) -> None:
    features = Features((100, 0, 100, 0, 0, 0, 0, 0), 3)
    calibration.observe(MODEL, features, reported=reported, predicted=predicted, basis=basis)


def test_the_margin_shrinks_to_the_observed_error() -> None:
    calibration = Calibration()
    assert calibration.fit(MODEL).margin == cal.MARGIN_UNCALIBRATED
    observe(calibration, 130, 100, 0)  # the uncalibrated estimate was 23% short
    assert calibration.fit(MODEL).margin == pytest.approx(30 / 130)
    observe(calibration, 130, 128, 1)
    assert calibration.fit(MODEL).margin == cal.MARGIN_LEARNING
    observe(calibration, 130, 129, 2)
    fit = calibration.fit(MODEL)
    assert fit.error == pytest.approx(1 / 130) and fit.margin == cal.MARGIN_FLOOR
    observe(calibration, 130, 125, 3)
    assert calibration.fit(MODEL).margin == pytest.approx(1.5 * 5 / 130)


def test_calibration_round_trips_and_refuses_what_it_is_not() -> None:
    calibration = Calibration()
    observe(calibration, 130, 100, 0)
    observe(calibration, 131, 128, 1)
    copy = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert copy.fit(MODEL) == calibration.fit(MODEL)
    data = calibration.to_dict()
    data["models"][MODEL]["observations"][0]["reported"] = -5
    with pytest.raises(ValueError, match="Not a calibration"):
        Calibration.from_dict(data)
    with pytest.raises(ValueError):
        Calibration.from_dict({"models": {MODEL: {"observations": [{"content": "x"}]}}})


def test_an_import_with_a_bad_calibration_is_refused() -> None:
    conversation = Conversation("sys", ChatSettings(model=MODEL, context_budget=100))
    data = conversation.to_dict()
    data["calibration"] = {"models": {MODEL: {"observations": [{"reported": 1e400}]}}}
    with pytest.raises(Exception, match="calibration"):
        Conversation.from_dict(data)


def test_cap_to_window() -> None:
    assert cap_to_window(4096, None, 1000) == 4096
    assert cap_to_window(4096, 2048, 1000) == 1048
    assert cap_to_window(4096, 500, 1000) == 1


def test_installing_a_tokenizer_recounts_and_survives_budget_changes() -> None:
    conversation = Conversation(SYSTEM, ChatSettings(model=MODEL, context_budget=1000))
    conversation.add_user("北京烤鸭怎么吃？")
    calibration = conversation.calibration
    observe(calibration, 300, 100, 0)
    tokenizer = calibration.tokenizer(tokenizer_for(MODEL))
    before = conversation.prompt_tokens
    conversation.set_tokenizer(tokenizer)
    assert conversation.prompt_tokens > before
    total = sum(m.tokens for m in conversation.messages) + tokenizer.reply_priming
    assert conversation.prompt_tokens == total
    assert conversation.context_budget == shrink(1000, tokenizer.fit.margin)
    conversation.update_settings(context_budget=2000)
    assert conversation.tokenizer is tokenizer
    conversation.update_settings(model="llama3.2")
    assert conversation.tokenizer == tokenizer_for("llama3.2")
    assert conversation.context_budget == 2000


def test_a_prompt_that_cannot_fit_is_refused_before_sending(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize="vllm")
    session = chat(openai_server, budget=40)
    with pytest.raises(PromptTooLong):
        list(session.send(QUESTIONS[2] * 3))
    assert openai_server.chat_requests == []


def test_the_page_reads_the_method_window_and_budgets_in_one_call(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize=None, max_model_len=2048)
    session = chat(openai_server, budget=4096, reply_cap=48)
    status = session.counting.describe(session.conversation)
    assert (status.method, status.exact, status.error, status.calibrated_turns) == (
        METHOD_UNCALIBRATED,
        False,
        None,
        0,
    )
    assert status.context_window is None  # not asked yet: describe() never goes to the network
    run_turns(session, openai_server, 3)
    status = session.counting.describe(session.conversation)
    assert status.method.startswith("calibrated estimate (±") and status.calibrated_turns == 3
    assert status.error is not None and status.margin >= cal.MARGIN_FLOOR
    assert status.context_window == 2048 and status.budget_setting == 4096
    assert status.budget == shrink(2000, status.margin) == session.conversation.context_budget


def test_server_counts_are_kept_per_model(openai_server: OpenAIServer) -> None:
    serve(openai_server, tokenize="vllm")
    openai_server.models.append("qwen3-other")
    session = chat(openai_server, budget=1000)
    run_turns(session, openai_server, 2)
    session.update_settings(model="qwen3-other")
    counts_before = len(tokenize_requests(openai_server))
    run_turns(session, openai_server, 1)
    # The new model is probed and every message counted again, not taken from the old model.
    assert len(tokenize_requests(openai_server)) - counts_before >= 4 + 5
    turn = session.last_turn
    assert turn is not None and turn.counted_prompt_tokens == turn.reported_prompt_tokens


# --- a server that cuts the prompt silently (Ollama's num_ctx) -----------------------------


@pytest.mark.parametrize("exact", [True, False], ids=["tiktoken-exact", "calibrated-estimate"])
def test_a_prompt_the_server_cut_is_named_and_not_calibrated_to(
    openai_server: OpenAIServer, exact: bool
) -> None:
    if exact:
        session = ChatSession(
            Conversation(
                SYSTEM, ChatSettings(model="gpt-4o-mini", context_budget=4_000, max_reply_tokens=200)
            ),
            OpenAIBackend("sk-test", openai_server.base_url, max_retries=0),
        )
    else:
        serve(openai_server, tokenize=None)
        session = chat(openai_server, budget=4_000)
    openai_server.num_ctx = 400  # the server reads at most 400 tokens and says nothing
    results = run_turns(session, openai_server, 10)
    turns = session.conversation.turns
    cut = [turn for turn in turns if turn.server_cut is not None]
    assert cut and cut[0] is not turns[0]  # the first prompts fit in 400 tokens
    for turn in turns:
        truncation = turn.server_cut
        if turn.reported_prompt_tokens < 400:  # read whole
            assert truncation is None
        else:  # It read 400 of the tokens sent; the budget offered stays below that.
            assert truncation is not None and truncation.read == 400
            assert truncation.sent == turn.counted_prompt_tokens > 400
            assert truncation.suggested_budget == 360
    assert [reported for _, reported in results if reported >= 400] and max(r for _, r in results) == 400
    if not exact:
        # Only the turns the server read whole were calibration samples.
        observations = session.conversation.calibration.observations(MODEL)
        assert len(observations) == len(turns) - len(cut) and all(o.reported < 400 for o in observations)
        assert session.conversation.calibration.fit(MODEL).error is not None


def test_a_short_report_within_the_estimates_error_is_not_a_cut() -> None:
    assert cal.silent_truncation(1_000, 960) is None  # 4% short of an exact count
    assert cal.silent_truncation(1_000, 900) == cal.SilentTruncation(read=900, sent=1_000)
    # An uncalibrated estimate may be 10% short: a report 20% below it is not yet a cut.
    assert cal.silent_truncation(1_000, 800, margin=0.10) is None
    assert cal.silent_truncation(1_000, 700, margin=0.10) is not None
    assert cal.silent_truncation(1_000, 880, margin=0.02) is not None  # a calibrated one, 2%
    assert cal.silent_truncation(100, 90) is None  # 10 tokens short: too few to say
    # A server reporting only the uncached part of the prompt did not cut it.
    assert cal.silent_truncation(2_000, 500, cached=1_500) is None
    assert cal.silent_truncation(2_000, None) is None
