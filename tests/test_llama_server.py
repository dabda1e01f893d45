"""Against llama.cpp's own `llama-server` with a real small model (SmolLM2-135M-Instruct, its
real tokenizer and chat template), when one is running: `../shared/tools/llama-server.sh [PORT]`
starts it (LLAMA_SERVER_URL, default http://127.0.0.1:8901). Skipped when absent; everything
else passes without it."""

from __future__ import annotations

import os
import urllib.request

import pytest

from core.counting.calibration import Calibration
from core.providers.backends import ChatRequest, OpenAIBackend
from tests.test_counting import MIXED_QUESTIONS, MIXED_REPLIES

URL = os.environ.get("LLAMA_SERVER_URL", "http://127.0.0.1:8901")
MODEL = "smollm2-135m-instruct"


def _running() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _running(), reason=f"no llama-server at {URL} (tools/llama-server.sh)")


def backend() -> OpenAIBackend:
    return OpenAIBackend("local", f"{URL}/v1", timeout=120.0, max_retries=0)


def test_calibration_on_a_real_tokenizer_is_within_3_percent_from_the_third_turn() -> None:
    """The estimate, fitted turn by turn to the real tokenizer's count of each prompt (llama.cpp
    renders its chat template and tokenizes it), on questions mixing Chinese, English, emoji and
    digits."""
    client = backend().tokenize_client()
    calibration = Calibration()
    messages = [{"role": "system", "content": "You are a warm food guide. 你是一位热情的美食向导。"}]
    errors = []
    for number, question in enumerate(MIXED_QUESTIONS):
        messages.append({"role": "user", "content": question})
        features = calibration.features(messages)
        fit = calibration.fit(MODEL)
        predicted = round(fit.params.prompt(features))
        reported = client.count_llamacpp(messages)
        errors.append(abs(predicted - reported) / reported)
        # Calls are fitted to the budget less the margin: an estimate short by more would go over.
        if number >= 2:  # nothing is known of the tokenizer before the first report
            assert reported <= predicted * (1 + fit.margin), (number, predicted, reported, fit.margin)
        calibration.observe(MODEL, features, reported=reported, predicted=predicted, basis=fit.turns)
        messages.append({"role": "assistant", "content": MIXED_REPLIES[number % len(MIXED_REPLIES)]})
    assert max(errors[2:]) <= 0.03, [f"{e:.1%}" for e in errors]


def test_llama_server_reports_cached_prompt_tokens() -> None:
    chat = backend()
    history = [{"role": "system", "content": "Answer in one short sentence."}]
    usages = []
    for question in MIXED_QUESTIONS[:3]:
        history.append({"role": "user", "content": question})
        stream = chat.stream(ChatRequest(messages=list(history), model=MODEL, max_reply_tokens=16))
        history.append({"role": "assistant", "content": "".join(stream) or "."})
        usages.append(stream.usage)
    assert all(usage is not None for usage in usages)
    assert usages[-1] is not None and (usages[-1].cached_prompt_tokens or 0) > 0
