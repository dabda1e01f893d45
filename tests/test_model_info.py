import pytest

from core.counting.model_info import load_model_table
from core.errors import DashboardError


def test_shipped_table_loads_and_matches_snapshots():
    table = load_model_table()
    assert table.lookup("gpt-4o-mini").input_per_million == 0.15
    # A dated snapshot matches its model; the longest name wins; gpt-4o is not "gpt-4".
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("gpt-4o") != table.lookup("gpt-4")
    assert table.lookup("gpt-4.1").context_window == 1047576
    assert table.lookup("llama3.2") is None


def test_cost_is_per_million_tokens():
    info = load_model_table().lookup("gpt-4o")
    assert info.cost(1_000_000, 0) == pytest.approx(2.50)
    assert info.cost(1000, 1000) == pytest.approx(0.0125)


def test_bad_table_is_a_clear_error(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("gpt-x: {context_window: -1, input_per_million: 1, output_per_million: 1}\n")
    with pytest.raises(DashboardError, match="context_window"):
        load_model_table(path)


def test_cached_and_cache_write_tokens_are_priced_apart():
    table = load_model_table()
    gpt = table.lookup("gpt-4o-mini")
    # 1M prompt tokens of which 600k came from cache: 400k at 0.15, 600k at 0.075.
    assert gpt.cost(1_000_000, 0, cached_tokens=600_000) == pytest.approx(0.4 * 0.15 + 0.6 * 0.075)
    claude = table.lookup("claude-sonnet-4-5-20250929")
    cost = claude.cost(1_000_000, 0, cached_tokens=500_000, cache_write_tokens=300_000)
    assert cost == pytest.approx(0.2 * 3.00 + 0.5 * 0.30 + 0.3 * 3.75)
    # A model with no cached price bills cached tokens at the input price.
    gpt4 = table.lookup("gpt-4")
    assert gpt4.cached_input_per_million is None
    assert gpt4.cost(1000, 0, cached_tokens=900) == gpt4.cost(1000, 0)
    assert table.lookup("deepseek-chat").cached_input_per_million == 0.028
