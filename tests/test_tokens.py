"""Token counts must equal what the Chat Completions API reports as usage.prompt_tokens."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.counting import tokens
from core.counting.tokens import count_prompt_tokens, get_encoding, tokenizer_for
from core.errors import TokenizerDataError

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", whose
# API-verified counts are 129 (gpt-3.5-turbo, gpt-4) and 124 (gpt-4o, gpt-4o-mini).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4-0613", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_cookbook_ground_truth(model, expected):
    assert count_prompt_tokens(COOKBOOK_MESSAGES, model) == expected


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
    ],
)
def test_model_to_encoding_follows_tiktoken(model, encoding):
    tokenizer = tokenizer_for(model)
    assert (tokenizer.encoding_name, tokenizer.exact) == (encoding, True)


@pytest.mark.parametrize("model", ["llama3.2", "qwen2.5:7b", "mistral-small", "gpt-oss-20b"])
def test_unknown_models_fall_back_to_an_estimate(model):
    tokenizer = tokenizer_for(model)
    assert tokenizer.encoding_name == tokens.FALLBACK_ENCODING
    assert tokenizer.exact is False
    assert count_prompt_tokens([{"role": "user", "content": "hi"}], model) > 0


def test_encodings_match_tiktoken_token_ids():
    # Token ids published with tiktoken's README / tests.
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_encoding_is_loaded_once_per_process():
    assert get_encoding("o200k_base") is get_encoding("o200k_base")


def test_bundled_ranks_are_checked_against_tiktokens_hash():
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    with pytest.raises(TokenizerDataError, match="sha256"):
        tokens._bundled_ranks(url, expected_hash="0" * 64)


def test_encoding_without_bundled_ranks_is_a_clear_error():
    with pytest.raises(TokenizerDataError, match="r50k_base"):
        get_encoding("r50k_base")


def test_counting_works_with_no_network_and_an_empty_tiktoken_cache(tmp_path):
    # A fresh process with an empty cache and every download pointed at a dead proxy.
    script = (
        "from core.counting.tokens import count_prompt_tokens\n"
        "print(count_prompt_tokens([{'role': 'user', 'content': 'hello'}], 'gpt-4o'),"
        " count_prompt_tokens([{'role': 'user', 'content': 'hello'}], 'gpt-4'))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["8", "8"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("special", ["<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>", "<|im_start|>"])
def test_special_token_strings_are_counted_as_plain_text(special):
    tokenizer = tokenizer_for("gpt-4")
    text = f"before {special} after"
    ids = tokenizer.encoding.encode(text, disallowed_special=())
    assert 100257 not in ids  # never the real <|endoftext|> id
    assert tokenizer.count_text(text) == len(ids) > 3
    assert count_prompt_tokens([{"role": "user", "content": text}], "gpt-4o") > 0


def test_prompt_count_is_the_sum_of_cached_message_counts():
    tokenizer = tokenizer_for("gpt-4o")
    per_message = sum(tokenizer.count_message(m) for m in COOKBOOK_MESSAGES)
    assert per_message + tokens.REPLY_PRIMING == count_prompt_tokens(COOKBOOK_MESSAGES, "gpt-4o")


def test_name_costs_one_token_more_than_its_text():
    tokenizer = tokenizer_for("gpt-4o")
    plain = tokenizer.count_message({"role": "user", "content": "hi"})
    named = tokenizer.count_message({"role": "user", "content": "hi", "name": "bob"})
    assert named - plain == tokenizer.count_text("bob") + 1


def test_a_tiktoken_count_says_how_it_counts_and_keeps_the_budget():
    exact, estimate = tokenizer_for("gpt-4o"), tokenizer_for("llama3.2")
    assert (exact.method, estimate.method) == (tokens.METHOD_TIKTOKEN, tokens.METHOD_UNCALIBRATED)
    assert exact.reply_priming == estimate.reply_priming == tokens.REPLY_PRIMING
    assert exact.prompt_budget(4096, 1024) == estimate.prompt_budget(4096, 1024) == 4096
