"""Bradley–Terry ratings with bootstrap intervals (core/compare/leaderboard.py), checked against an
independent maximum-likelihood fit written here (Hunter's MM algorithm, plain Python)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from typing import Any

import pytest

from core.compare.comparison import Candidate, Pick
from core.compare.leaderboard import (
    MIN_VOTES,
    Contestant,
    Outcome,
    Vote,
    VoteCounts,
    contestant_of,
    counted_votes,
    leaderboard,
    votes_from_picks,
)

A = Contestant("foodie", "gpt-4o-mini", "budget 1,024")
B = Contestant("foodie", "gpt-4o-mini", "budget 4,096")
C = Contestant("editor", "gpt-4.1")
D = Contestant("tutor", "qwen3")


def votes_of(*spec: tuple[Contestant, Contestant, Outcome, int]) -> list[Vote]:
    return [Vote(a, b, outcome) for a, b, outcome, times in spec for _ in range(times)]


#: A known vote set: every contestant wins and loses somewhere, with ties and a "both bad".
KNOWN = votes_of(
    (A, B, Outcome.A, 7),
    (A, B, Outcome.B, 3),
    (A, B, Outcome.TIE, 2),
    (B, C, Outcome.A, 4),
    (B, C, Outcome.B, 5),
    (C, A, Outcome.A, 2),
    (C, A, Outcome.B, 6),
    (C, D, Outcome.A, 8),
    (C, D, Outcome.BOTH_BAD, 1),
    (D, A, Outcome.A, 1),
    (D, A, Outcome.B, 4),
)


def independent_fit(votes: list[Vote]) -> dict[Contestant, float]:
    """The same model fitted another way: Hunter's (2004) MM iteration on the strengths, ties as
    half a win each way, one virtual tie per contestant against a reference of strength 1;
    returned on the 1000 + 400·log10 scale."""
    players = sorted({c for v in votes for c in (v.a, v.b)})
    wins = {p: 0.5 for p in players}  # the virtual tie's half win
    games: dict[tuple[Contestant, Contestant], float] = {}
    for vote in votes:
        share_a = {Outcome.A: 1.0, Outcome.B: 0.0}.get(vote.outcome, 0.5)
        wins[vote.a] += share_a
        wins[vote.b] += 1 - share_a
        for pair in ((vote.a, vote.b), (vote.b, vote.a)):
            games[pair] = games.get(pair, 0.0) + 1
    strength = {p: 1.0 for p in players}
    for _ in range(100_000):
        new = {}
        for p in players:
            denominator = 1 / (strength[p] + 1)
            denominator += sum(n / (strength[p] + strength[q]) for (i, q), n in games.items() if i == p)
            new[p] = wins[p] / denominator
        moved = max(abs(math.log(new[p] / strength[p])) for p in players)
        strength = new
        if moved < 1e-12:
            break
    return {p: 1000 + 400 * math.log10(s) for p, s in strength.items()}


def test_ratings_match_an_independent_maximum_likelihood_fit() -> None:
    board = leaderboard(KNOWN)
    expected = independent_fit(KNOWN)
    assert {row.contestant for row in board.ratings} == set(expected)
    for row in board.ratings:
        assert row.rating == pytest.approx(expected[row.contestant], abs=1e-6)
    # Best first, and the order the known votes imply: A beat everyone more often than not.
    assert [row.contestant for row in board.ratings] == sorted(expected, key=lambda c: -expected[c])
    assert board.ratings[0].contestant == A


def test_records_count_wins_losses_and_ties_per_contestant() -> None:
    rows = {row.contestant: row for row in leaderboard(KNOWN).ratings}
    assert (rows[A].wins, rows[A].losses, rows[A].ties) == (7 + 6 + 4, 3 + 2 + 1, 2)
    assert (rows[D].wins, rows[D].losses, rows[D].ties) == (1, 8 + 4, 1)  # "both bad" is a tie
    assert sum(row.votes for row in rows.values()) == 2 * len(KNOWN)


def test_the_interval_holds_the_estimate_and_narrows_with_more_votes() -> None:
    few = {row.contestant: row for row in leaderboard(KNOWN).ratings}
    many = {row.contestant: row for row in leaderboard(KNOWN * 10).ratings}
    for contestant, row in few.items():
        assert row.lower <= row.rating <= row.upper
        assert many[contestant].upper - many[contestant].lower < (row.upper - row.lower) / 2


def test_known_strengths_are_recovered_from_simulated_votes() -> None:
    players = [Contestant(f"persona {n}", "m") for n in range(5)]
    true = {p: 1000 + 100 * n for n, p in enumerate(players)}  # 100 points apart
    rng = random.Random(7)
    votes = []
    for _ in range(3000):
        a, b = rng.sample(players, 2)
        p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
        votes.append(Vote(a, b, Outcome.A if rng.random() < p_a else Outcome.B))
    board = leaderboard(votes)
    assert [row.contestant for row in board.ratings] == players[::-1]
    # Ratings are anchored differently from the truth: compare them about their means.
    fitted_mean = sum(row.rating for row in board.ratings) / len(players)
    for row in board.ratings:
        assert row.rating - fitted_mean == pytest.approx(true[row.contestant] - 1200, abs=40)


def test_equal_records_rate_equal_and_an_unbeaten_contestant_stays_finite() -> None:
    level = leaderboard(votes_of((A, B, Outcome.A, 3), (A, B, Outcome.B, 3)))
    assert level.ratings[0].rating == pytest.approx(level.ratings[1].rating)
    unbeaten = leaderboard(votes_of((A, B, Outcome.A, 5)))
    top, bottom = unbeaten.ratings
    assert top.contestant == A and math.isfinite(top.rating) and math.isfinite(bottom.rating)
    assert top.rating > 1000 > bottom.rating


def test_not_enough_votes_below_the_threshold() -> None:
    thin = leaderboard(votes_of((A, B, Outcome.A, MIN_VOTES - 1)))
    assert not thin.enough_votes
    assert not any(row.enough_votes for row in thin.ratings)
    enough = leaderboard(votes_of((A, B, Outcome.A, MIN_VOTES)))
    assert enough.enough_votes
    assert leaderboard([]).ratings == () and not leaderboard([]).enough_votes


def test_the_same_votes_give_the_same_table() -> None:
    assert leaderboard(KNOWN) == leaderboard(KNOWN)
    assert leaderboard(KNOWN, seed=1).ratings[0].lower != leaderboard(KNOWN, seed=2).ratings[0].lower


def test_exports_carry_every_row() -> None:
    board = leaderboard(KNOWN)
    rows = list(csv.DictReader(io.StringIO(board.to_csv())))
    assert [(r["persona"], r["model"], r["settings"]) for r in rows] == [
        (row.contestant.persona, row.contestant.model, row.contestant.settings) for row in board.ratings
    ]
    assert [int(r["rank"]) for r in rows] == list(range(1, 5))
    assert float(rows[0]["rating"]) == pytest.approx(board.ratings[0].rating, abs=0.05)
    data = json.loads(board.to_json())
    assert data["votes"] == len(KNOWN)
    assert data["ratings"][0]["persona"] == "foodie" and data["ratings"][0]["wins"] == 17


def test_picks_become_pairwise_votes() -> None:
    candidates = (
        Candidate(label="A", persona_id="foodie", model="gpt-4o-mini", settings="budget 1,024"),
        Candidate(label="B", persona_id="foodie", model="gpt-4o-mini", settings="budget 4,096"),
        Candidate(label="C", persona_id="editor", model="gpt-4.1"),
    )
    preferred = Pick(
        round=1,
        column=1,
        label="B",
        persona_id="foodie",
        model="gpt-4o-mini",
        blind=True,
        candidates=candidates,
    )
    assert votes_from_picks([preferred]) == [Vote(B, A, Outcome.A), Vote(B, C, Outcome.A)]
    tie = Pick(round=2, outcome="tie", column=None, label=None, persona_id=None, model=None, blind=False,
               candidates=candidates[:2])  # fmt: skip
    assert votes_from_picks([tie]) == [Vote(A, B, Outcome.TIE)]
    bad = tie.model_copy(update={"outcome": "both_bad"})
    assert votes_from_picks([bad]) == [Vote(A, B, Outcome.BOTH_BAD)]


# --- the page's leaderboard (ui/leaderboard_view.py) ---------------------------------------------


def leaderboard_page(votes_each: int, language: str, open_votes: int = 0) -> None:
    """A script for AppTest: the leaderboard of `votes_each` blind picks between two columns, each
    in a comparison of its own, and a comparison of `open_votes` open picks."""
    import streamlit as st

    from core.i18n import LANGUAGE_STATE
    from tests.test_leaderboard import leaderboard_page_picks
    from ui.leaderboard_view import leaderboard_section

    st.session_state[LANGUAGE_STATE] = language
    opened = [pick.model_copy(update={"blind": False}) for pick in leaderboard_page_picks(open_votes)]
    leaderboard_section([*([pick] for pick in leaderboard_page_picks(votes_each)), opened])


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_page_shows_the_table_the_interval_and_the_exports(language: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(
        leaderboard_page, kwargs={"votes_each": 12, "language": language}, default_timeout=60
    ).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 2
    expected = leaderboard(votes_from_picks(leaderboard_page_picks(12)))
    assert list(table.iloc[:, 3]) == [round(row.rating) for row in expected.ratings]
    assert not at.warning  # 12 votes each: enough
    assert len(at.get("download_button")) == 2
    if language == "zh-CN":
        assert at.subheader[0].value == "排行榜"
        # Stored in English (it identifies the contestant), shown in the page's language.
        assert sorted(table.iloc[:, -1]) == ["", "预算 1,024"]


def test_the_page_says_when_there_are_not_enough_votes() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(
        leaderboard_page, kwargs={"votes_each": 3, "language": "en"}, default_timeout=60
    ).run()
    assert not at.exception
    assert "Not enough votes yet" in at.warning[0].value
    assert set(at.dataframe[0].value["Status"]) == {"not enough votes yet"}
    empty = AppTest.from_function(
        leaderboard_page, kwargs={"votes_each": 0, "language": "en"}, default_timeout=60
    ).run()
    assert "No votes yet" in empty.info[0].value and not empty.dataframe


def leaderboard_page_picks(count: int) -> list[Pick]:
    """`count` picks between two contestants, the second preferred two times in three."""
    candidates = (
        Candidate(label="A", persona_id="foodie", model="gpt-4o-mini", settings="budget 1,024"),
        Candidate(label="B", persona_id="tutor", model="gpt-4.1"),
    )
    return [
        Pick(round=n + 1, column=n % 3 and 1, label="x", persona_id="p", model="m", blind=True,
             candidates=candidates)
        for n in range(count)
    ]  # fmt: skip


def test_the_chart_is_valid_vega_lite_with_one_row_per_contestant() -> None:
    from core.charts import leaderboard_spec
    from tests.test_stats import assert_valid_vega_lite

    board = leaderboard(KNOWN)
    spec = leaderboard_spec(board, rating_title="Rating", interval_title="95%", votes_title="votes")
    assert_valid_vega_lite(spec)
    rows = spec["datasets"]["ratings"]
    assert [row["contestant"] for row in rows] == [row.contestant.label for row in board.ratings]
    assert all(row["lower"] <= row["rating"] <= row["upper"] for row in rows)


# --- which votes count -------------------------------------------------------------------------


def test_a_blind_pairs_first_vote_is_blind_and_its_later_turns_are_open() -> None:
    """What the counting rule rests on: a vote reveals the pair, so later turns are voted open."""
    from core.compare.comparison import Column, Comparison
    from core.personas.persona import Persona
    from core.providers.offline import OfflineBackend

    persona = Persona.model_validate(
        {
            "id": "cook",
            "name": "Cook",
            "avatar": "🍳",
            "description": "Cooks.",
            "system_prompt": "Cook.",
            "model": "gpt-4o-mini",
            "context_budget": 4000,
            "max_reply_tokens": 200,
        }
    )
    backend = OfflineBackend()
    pair = Comparison.blind_pair(
        Column.start(persona, backend), Column.start(persona, backend, model="gpt-4.1"), rng=random.Random(1)
    )
    for question, outcome in (("Duck?", "tie"), ("Pancakes?", "both_bad"), ("Sauce?", "preferred")):
        pair.send(question)
        assert pair.wait(10)
        pair.vote(outcome, 0 if outcome == "preferred" else None)  # type: ignore[arg-type]
    assert [pick.blind for pick in pair.picks] == [True, False, False]
    winner = contestant_of(pair.picks[-1].candidates[0])
    loser = contestant_of(pair.picks[-1].candidates[1])
    assert counted_votes([pair.picks]) == [Vote(winner, loser, Outcome.TIE)]  # the blind one
    assert counted_votes([pair.picks], "all") == [Vote(winner, loser, Outcome.A)]  # the last
    assert VoteCounts.of([pair.picks]) == VoteCounts(blind=1, open=2)


def test_one_vote_per_pair_per_conversation_counts_its_last() -> None:
    three = (
        Candidate(label="A", persona_id="foodie", model="gpt-4o-mini", settings="budget 1,024"),
        Candidate(label="B", persona_id="foodie", model="gpt-4o-mini", settings="budget 4,096"),
        Candidate(label="C", persona_id="editor", model="gpt-4.1"),
    )

    def pick(round_: int, column: int | None, *, blind: bool = False, candidates=three) -> Pick:
        outcome = "preferred" if column is not None else "tie"
        return Pick(round=round_, outcome=outcome, column=column, label=None, persona_id=None, model=None,
                    blind=blind, candidates=candidates)  # fmt: skip

    # Three turns of one comparison: C, then A, then a tie; only the tie stands, once per pair.
    comparison = [pick(1, 2), pick(2, 0), pick(3, None)]
    assert counted_votes([comparison], "all") == [
        Vote(A, B, Outcome.TIE),
        Vote(A, C, Outcome.TIE),
        Vote(B, C, Outcome.TIE),
    ]
    # A column whose settings changed mid-comparison is another contestant: its pair keeps its vote.
    changed = (*three[:2], Candidate(label="C", persona_id="tutor", model="qwen3"))
    later = [pick(1, 2), pick(2, 0, candidates=changed)]
    assert counted_votes([later], "all") == [
        Vote(C, A, Outcome.A),  # only the first turn had these two pairs
        Vote(C, B, Outcome.A),
        Vote(A, B, Outcome.A),
        Vote(A, D, Outcome.A),
    ]
    # Separate conversations (comparisons, or test-set prompts) each count, blind ones by default.
    separate = [[pick(1, 0, blind=True)], [pick(1, 0, blind=True)], [pick(1, 1)]]
    assert counted_votes(separate) == 2 * [Vote(A, B, Outcome.A), Vote(A, C, Outcome.A)]
    assert len(counted_votes(separate, "all")) == 6
    assert VoteCounts.of(separate) == VoteCounts(blind=2, open=1)
    assert (VoteCounts(2, 1).counted("blind"), VoteCounts(2, 1).counted("all")) == (2, 3)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_page_counts_blind_votes_unless_all_are_chosen(language: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(
        leaderboard_page, kwargs={"votes_each": 6, "language": language, "open_votes": 9}, default_timeout=60
    ).run()
    assert not at.exception
    scope = at.segmented_control(key="leaderboard_scope")
    assert scope.value == "blind"
    labels = list(scope.options)
    expected_labels = {
        "en": ["Blind votes only (6)", "All votes (15)"],
        "zh-CN": ["仅盲投（6）", "全部投票（15）"],
    }
    assert labels == expected_labels[language]
    # Six blind picks between the two, the second preferred in 4 (each its own comparison).
    assert sorted(won_lost_tied(at)) == [(2, 4, 0), (4, 2, 0)]
    # By its label: AppTest formats a raw value outside the script run, in English.
    scope.set_value(labels[1]).run()
    assert not at.exception
    # The 9 open picks are one comparison's: one vote for the pair, its last (the second won).
    assert sorted(won_lost_tied(at)) == [(2, 5, 0), (5, 2, 0)]


def won_lost_tied(at: Any) -> list[tuple[int, ...]]:
    """The leaderboard table's records, as numbers."""
    return [tuple(int(n) for n in re.findall(r"\d+", record)) for record in at.dataframe[0].value.iloc[:, 5]]


def test_the_page_says_when_there_are_open_votes_but_no_blind_ones() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(
        leaderboard_page, kwargs={"votes_each": 0, "language": "en", "open_votes": 3}, default_timeout=60
    ).run()
    assert "No blind votes yet" in at.info[0].value and not at.dataframe
    assert "0 blind · 3 open votes cast." in [c.value for c in at.caption]
