"""What a conversation is configured with: the model, its budgets, sampling and context policy.

A persona gives a new conversation its first settings; from then on they belong to the
conversation (the user may change them) and travel with it in exports and the store.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

MAX_CONTEXT_BUDGET = 2_000_000
MAX_REPLY_CAP = 200_000
#: The longest model name a conversation (or its summarizer) may name.
MAX_MODEL_NAME = 200
#: Reply cap of conversations exported before settings were (format version 1).
DEFAULT_REPLY_CAP = 1_024

#: How a conversation is fitted to its budget; see `core.chat.context`.
PolicyName = Literal["drop_oldest", "summarize", "stable_prefix"]
#: The share of the budget a `stable_prefix` step cuts the prompt down to, when not set.
DEFAULT_LOW_WATER = 0.65
POLICY_NAMES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)


class Sampling(BaseModel):
    """Sampling options sent with each request; an option left unset is not sent at all."""

    # Frozen: personas are shared by every session of the process.
    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, le=2, description="Randomness; 0 is most deterministic.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling probability mass.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="Penalty for repeating any topic.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="Penalty for repeating tokens.")
    seed: int | None = Field(
        None, description="Best-effort deterministic sampling where the server supports it."
    )


class ChatSettings(BaseModel):
    """One conversation's settings. Frozen: change them through `Conversation.update_settings`,
    which re-counts tokens when the model's tokenizer changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME)
    context_budget: int = Field(ge=1, le=MAX_CONTEXT_BUDGET)
    max_reply_tokens: int = Field(DEFAULT_REPLY_CAP, ge=1, le=MAX_REPLY_CAP)
    sampling: Sampling = Sampling()
    context_policy: PolicyName = "drop_oldest"
    #: The share of the budget a step cuts the prompt down to when it must take something out, so
    #: the turns after it only append and the prompt's prefix stays in the server's cache:
    #: `stable_prefix` drops down to it (DEFAULT_LOW_WATER when None), `summarize` folds down to
    #: it when set (else to its own mark, a summary's share and an eighth below the budget).
    low_water: float | None = Field(None, ge=0.1, le=0.95)
    #: The model that writes summaries (policy "summarize"); None: the conversation's own model.
    summarizer_model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME)

    @property
    def effective_summarizer_model(self) -> str:
        """The model that writes this conversation's summaries."""
        return self.summarizer_model or self.model
