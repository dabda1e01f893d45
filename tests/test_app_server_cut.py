"""A server that cuts prompts to its context window without saying so (Ollama's num_ctx), seen
through the page: the real SDK over HTTP against the local server."""

from __future__ import annotations

from tests.apptest import click, conversation, page_text, send, setting
from tests.openai_server import OpenAIServer


def test_the_page_names_a_silent_cut_and_offers_a_budget_below_it(start_app, openai_server: OpenAIServer):
    openai_server.num_ctx = 200  # it reads the last 200 tokens of a longer prompt, silently
    at = start_app(OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-test-cut")
    send(at, "Which dumplings should I try first in Xi'an, and where? " * 2)
    assert "cut the last prompt" not in page_text(at)
    for i in range(4):
        send(at, f"Question {i}: and which noodles go with them, and why? " * 3)
    turn = conversation(at).turns[-1]
    assert turn.reported_prompt_tokens == 200 < turn.counted_prompt_tokens
    assert f"it read 200 of the {turn.counted_prompt_tokens:,} tokens sent" in page_text(at)
    click(at, "Set the budget to 180")
    assert setting(at, "budget").value == 180
    assert conversation(at).settings.context_budget == 180
    send(at, "One more short question?")
    assert conversation(at).turns[-1].server_cut is None  # now the server reads every prompt whole
    assert "cut the last prompt" not in page_text(at)
