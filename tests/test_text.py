"""How the views write sums of money (ui/text.money)."""

from __future__ import annotations

import pytest

from ui.text import money


@pytest.mark.parametrize(
    ("dollars", "shown"),
    [
        (None, "—"),
        (0.0, "$0"),
        (0.00004, "< $0.0001"),
        (0.0123456, "$0.0123"),
        (1234.5, "$1,234.5000"),
        # Caching whose writes cost more than its reads saved: a negative saving keeps its sign.
        (-0.0012, "-$0.0012"),
        (-0.00004, "> -$0.0001"),
    ],
)
def test_money(dollars: float | None, shown: str) -> None:
    assert money(dollars) == shown
