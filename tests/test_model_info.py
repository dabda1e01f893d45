import pytest

from core.errors import DashboardError
from core.model_info import load_model_table


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
