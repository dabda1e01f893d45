"""Per-model facts (context window, prices) from the user-editable `models.yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import DashboardError

DEFAULT_MODELS_FILE = Path(__file__).resolve().parents[2] / "models.yaml"


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    context_window: int = Field(gt=0, description="Prompt plus reply tokens the model accepts.")
    input_per_million: float = Field(ge=0, description="US dollars per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="US dollars per million reply tokens.")
    cached_input_per_million: float | None = Field(
        None, ge=0, description="US dollars per million prompt tokens read from the prompt cache."
    )
    cache_write_per_million: float | None = Field(
        None, ge=0, description="US dollars per million prompt tokens written to the prompt cache."
    )

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """US dollars for one call: of its `prompt_tokens`, `cached_tokens` at the cached price and
        `cache_write_tokens` at the cache-write price (each the input price when not listed)."""
        uncached = max(prompt_tokens - cached_tokens - cache_write_tokens, 0)
        cached_price = self.cached_input_per_million
        write_price = self.cache_write_per_million
        cached_price = self.input_per_million if cached_price is None else cached_price
        write_price = self.input_per_million if write_price is None else write_price
        return (
            uncached * self.input_per_million
            + cached_tokens * cached_price
            + cache_write_tokens * write_price
            + completion_tokens * self.output_per_million
        ) / 1e6


class ModelTable:
    """Looks up a model by exact name or by the name its dated snapshot extends."""

    def __init__(self, models: dict[str, ModelInfo]) -> None:
        self.models = models

    def lookup(self, model: str) -> ModelInfo | None:
        matches = [name for name in self.models if model == name or model.startswith(name + "-")]
        return self.models[max(matches, key=len)] if matches else None


def load_model_table(path: str | Path = DEFAULT_MODELS_FILE) -> ModelTable:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise DashboardError(f"{path}: expected a mapping of model name to facts.")
        return ModelTable({str(name): ModelInfo.model_validate(facts) for name, facts in raw.items()})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise DashboardError(f"Could not read the model table {path}: {exc}") from exc
