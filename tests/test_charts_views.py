"""The compare and what-if charts are valid Vega-Lite and draw what they say."""

from __future__ import annotations

from core.charts import comparison_spec, replay_spec
from core.compare import Column, Comparison
from core.context import DropOldest
from core.conversation import Conversation
from core.i18n import translator
from core.model_info import load_model_table
from core.offline import OfflineBackend
from core.personas import BUNDLED_PERSONAS_DIR, load_personas
from core.replay import Scenario, compare
from core.settings import ChatSettings
from tests.test_stats import assert_valid_vega_lite

EN = translator("en")
PERSONAS = load_personas(BUNDLED_PERSONAS_DIR).personas


def test_the_comparison_chart_has_a_point_per_column_and_message() -> None:
    backend = OfflineBackend()
    comparison = Comparison([Column.start(PERSONAS[pid], backend) for pid in ("foodie", "translator")])
    assert comparison_spec(comparison.snapshot(), EN) is None  # nothing answered yet
    for text in ("one", "two"):
        comparison.send(text)
        assert comparison.wait(30)
    spec = comparison_spec(comparison.snapshot(), EN)
    assert spec is not None
    assert_valid_vega_lite(spec)
    rows = spec["datasets"]["runs"]
    assert sorted((row["round"], row["column"]) for row in rows) == sorted(
        (n, column.label) for n in (1, 2) for column in comparison.columns
    )


def test_the_replay_chart_shows_both_runs_and_the_budget() -> None:
    conversation = Conversation("sys", ChatSettings(model="gpt-4o", context_budget=100_000))
    for i in range(6):
        conversation.add_user(f"question {i} " + "word " * 30)
        DropOldest().fit(conversation)
        conversation.add_assistant(f"answer {i} " + "word " * 30)
    result = compare(conversation, Scenario(budget=200), load_model_table())
    spec = replay_spec(result, EN)
    assert_valid_vega_lite(spec)
    runs = {row["run"] for row in spec["datasets"]["replay"]}
    assert runs == {"recorded", "what if"}
    assert spec["layer"][-1]["encoding"]["y"]["datum"] == 200
    replayed = [row["prompt tokens"] for row in spec["datasets"]["replay"] if row["run"] == "what if"]
    assert max(replayed) <= 200
