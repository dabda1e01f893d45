"""The compare and what-if charts are valid Vega-Lite and draw what they say."""

from __future__ import annotations

from core.charts import ComparisonChartTexts, comparison_spec, replay_spec
from core.chat.context import DropOldest
from core.chat.conversation import Conversation
from core.chat.replay import Scenario, compare
from core.chat.settings import ChatSettings
from core.compare.comparison import Column, Comparison
from core.counting.model_info import load_model_table
from core.i18n import translator
from core.personas.persona import BUNDLED_PERSONAS_DIR, load_personas
from core.providers.offline import OfflineBackend
from tests.test_stats import assert_valid_vega_lite

EN = translator("en")
PERSONAS = load_personas(BUNDLED_PERSONAS_DIR).personas


def test_the_comparison_chart_has_a_point_per_column_and_message() -> None:
    backend = OfflineBackend()
    comparison = Comparison([Column.start(PERSONAS[pid], backend) for pid in ("foodie", "translator")])
    assert comparison_spec(comparison.snapshot()) is None  # nothing answered yet
    for text in ("one", "two"):
        comparison.send(text)
        assert comparison.wait(30)
    spec = comparison_spec(comparison.snapshot())
    assert spec is not None
    assert_valid_vega_lite(spec)
    rows = spec["datasets"]["runs"]
    assert sorted((row["round"], row["column"]) for row in rows) == sorted(
        (n, column.label) for n in (1, 2) for column in comparison.columns
    )
    assert spec["layer"][0]["encoding"]["color"]["legend"]["columns"] == 1  # one label per row


def test_the_comparison_chart_follows_the_data_and_names_a_far_budget() -> None:
    """A 200,000-token column beside prompts of a few hundred tokens: the y scale stops near the
    prompts and the far budget is named, not drawn (it used to flatten every line onto zero)."""
    backend = OfflineBackend()
    comparison = Comparison(
        [
            Column.start(PERSONAS["foodie"], backend, context_budget=150, label="near"),
            Column.start(PERSONAS["foodie"], backend, context_budget=200_000, label="wide"),
            Column.start(PERSONAS["foodie"], backend, context_budget=32_000, label="middle"),
        ]
    )
    comparison.send("one")
    assert comparison.wait(30)
    texts = ComparisonChartTexts(budget="预算", prompt_tokens="提示词 token", title="每条消息，按栏")
    spec = comparison_spec(comparison.snapshot(), texts)
    assert spec is not None
    assert_valid_vega_lite(spec)
    prompts = [row["prompt"] for row in spec["datasets"]["runs"]]
    top = spec["layer"][0]["encoding"]["y"]["scale"]["domain"][1]
    assert max(prompts) <= top < 200_000
    assert top == 150  # the near budget is still drawn
    notes = [
        layer["data"]["values"][0]["note"] for layer in spec["layer"] if "values" in layer.get("data", {})
    ]
    assert notes == ["预算 32,000 · 200,000 ↑"]  # each far budget named
    assert spec["layer"][0]["encoding"]["y"]["title"] == "提示词 token"
    assert spec["title"] == "每条消息，按栏"  # the chart's heading is its own title


def test_the_comparison_chart_waits_for_the_vote_in_blind_mode() -> None:
    backend = OfflineBackend()
    pair = Comparison.blind_pair(
        Column.start(PERSONAS["foodie"], backend), Column.start(PERSONAS["socratic-tutor"], backend)
    )
    pair.send("one")
    assert pair.wait(30)
    assert comparison_spec(pair.snapshot()) is None  # sizes would tell the columns apart
    pair.vote("both_bad")
    assert comparison_spec(pair.snapshot()) is not None


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
    # A budget far above every prompt is named, not drawn: drawn, it would flatten both lines.
    far = replay_spec(compare(conversation, Scenario(budget=1_000_000), load_model_table()), EN)
    assert_valid_vega_lite(far)
    assert [layer.get("name") for layer in far["layer"]] == [None, "budget_note"]
    assert far["layer"][-1]["data"]["values"] == [{"note": EN("chart.budget_off_scale", budget=1_000_000)}]
    assert all("datum" not in layer["encoding"].get("y", {}) for layer in far["layer"])
