"""Ratings from votes: which persona, on which model with which settings, people prefer.

A vote compares two contestants and says A, B, a tie, or both bad (a tie that both lost to the
user's expectations; rated as a tie, as Chatbot Arena does). Ratings are a Bradley–Terry fit:
P(i beats j) = p_i / (p_i + p_j), a tie counting half a win each way, fitted by maximum
likelihood and shown on an Elo-like scale (1000 + 400·log10 p). Each contestant also plays one
virtual tie against a fixed reference of strength 1: it anchors the scale and keeps a
contestant with no win (or no loss) finite, and it weighs as one vote, so it fades as real
votes come in. The 95% interval is a bootstrap over the votes (resampled with replacement,
refitted, the 2.5th and 97.5th percentiles).

Which votes count (`counted_votes`): by default only blind ones, as Chatbot Arena counts, since
an open vote knows who answered (open votes: a comparison not made blind, a blind pair's turns
after its first vote revealed it, test-set results); the leaderboard can count all of them
instead. And one vote per pair of contestants per conversation (a comparison, or one prompt of a
test-set run): its last. The turns of one conversation are one voter judging the same pair
again, not new evidence; counting each would let a long conversation outvote several short ones
and narrow the bootstrap intervals, which assume independent votes. The last vote stands for the
voter's final judgement (the same rule as a test-set result's vote, which a new one replaces).

    board = leaderboard(counted_votes(conversations, "blind"))
    for row in board.ratings: row.contestant.label, row.rating, row.lower, row.upper
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

from core.compare.comparison import Candidate, Pick

#: Bootstrap resamples for the confidence interval.
BOOTSTRAP_SAMPLES = 1000
#: A contestant with fewer votes than this is listed as "not enough votes yet".
MIN_VOTES = 5
#: The Elo-like scale: a strength ratio of 10 is 400 points.
SCALE_BASE = 1000.0
SCALE_POINTS = 400.0
#: Stop the fit when no log-strength moves more than this.
_TOLERANCE = 1e-10
_MAX_ITERATIONS = 100

CSV_COLUMNS = (
    "rank", "persona", "model", "settings", "rating", "lower_95", "upper_95", "wins", "losses", "ties"
)  # fmt: skip

FloatArray = npt.NDArray[np.float64]

#: Which votes the leaderboard counts: "blind" (the default) or "all" (open ones too).
VoteScope = Literal["blind", "all"]
VOTE_SCOPES: tuple[VoteScope, ...] = ("blind", "all")


class Outcome(StrEnum):
    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


@dataclass(frozen=True, order=True)
class Contestant:
    """What is ranked: a persona on a model with its settings (two budgets of one persona on one
    model are two contestants)."""

    persona: str
    model: str
    #: The settings that tell two runs of one persona on one model apart, e.g. "budget 4,096".
    settings: str = ""

    @property
    def label(self) -> str:
        return " · ".join(part for part in (self.persona, self.model, self.settings) if part)


@dataclass(frozen=True)
class Vote:
    a: Contestant
    b: Contestant
    outcome: Outcome


@dataclass(frozen=True)
class Rating:
    contestant: Contestant
    rating: float
    #: The 95% bootstrap interval of `rating`.
    lower: float
    upper: float
    wins: int
    losses: int
    ties: int

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def enough_votes(self) -> bool:
        return self.votes >= MIN_VOTES


@dataclass(frozen=True)
class Leaderboard:
    #: Best first (by rating, then by name).
    ratings: tuple[Rating, ...]
    votes: int

    @property
    def enough_votes(self) -> bool:
        """At least two contestants with enough votes each to be told apart."""
        return sum(rating.enough_votes for rating in self.ratings) >= 2

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "rank",
                "persona",
                "model",
                "settings",
                "rating",
                "lower_95",
                "upper_95",
                "wins",
                "losses",
                "ties",
            ]
        )
        for rank, row in enumerate(self.ratings, start=1):
            c = row.contestant
            figures = (f"{value:.1f}" for value in (row.rating, row.lower, row.upper))
            writer.writerow([rank, c.persona, c.model, c.settings, *figures, row.wins, row.losses, row.ties])
        return out.getvalue()

    def to_json(self) -> str:
        rows = [
            {**asdict(row.contestant), **{k: v for k, v in asdict(row).items() if k != "contestant"}}
            for row in self.ratings
        ]
        return json.dumps({"votes": self.votes, "ratings": rows}, ensure_ascii=False, indent=2)


def contestant_of(candidate: Candidate) -> Contestant:
    return Contestant(candidate.persona_id or "", candidate.model, candidate.settings)


def votes_from_picks(picks: Iterable[Pick]) -> list[Vote]:
    """Pairwise votes from comparison picks: the preferred answer beat every other column's; a
    tie or "all bad" ties every pair. Columns that are the same contestant are not compared."""
    votes = []
    for pick in picks:
        contestants = [contestant_of(c) for c in pick.candidates]
        if pick.outcome == "preferred" and pick.column is not None:
            winner = contestants[pick.column]
            votes += [Vote(winner, other, Outcome.A) for other in contestants if other != winner]
            continue
        outcome = Outcome.TIE if pick.outcome == "tie" else Outcome.BOTH_BAD
        votes += [
            Vote(a, b, outcome) for n, a in enumerate(contestants) for b in contestants[n + 1 :] if a != b
        ]
    return votes


@dataclass(frozen=True)
class VoteCounts:
    """How many votes (picks) were cast with the answers anonymous, and how many knowing them."""

    blind: int
    open: int

    @classmethod
    def of(cls, conversations: Iterable[Sequence[Pick]]) -> VoteCounts:
        picks = [pick for picks in conversations for pick in picks]
        blind = sum(pick.blind for pick in picks)
        return cls(blind=blind, open=len(picks) - blind)

    def counted(self, scope: VoteScope) -> int:
        return self.blind if scope == "blind" else self.blind + self.open


def counted_votes(conversations: Iterable[Sequence[Pick]], scope: VoteScope = "blind") -> list[Vote]:
    """The pairwise votes the leaderboard counts from each conversation's picks (oldest first):
    blind ones only unless `scope` is "all", then one vote per pair of contestants per
    conversation, its last (see the module docstring for why)."""
    votes: list[Vote] = []
    for picks in conversations:
        last: dict[frozenset[Contestant], Vote] = {}
        for pick in picks:
            if scope == "blind" and not pick.blind:
                continue
            for vote in votes_from_picks([pick]):
                last.pop(pair := frozenset((vote.a, vote.b)), None)  # the later vote goes last
                last[pair] = vote
        votes += last.values()
    return votes


def vote_scores(votes: Sequence[Vote], contestants: Sequence[Contestant]) -> FloatArray:
    """One row per vote, flattened k×k: what the vote adds to S[i, j], the wins of i over j (a
    tie counts half to each). `weights @ vote_scores(...)` is the score matrix of a resample."""
    index = {c: n for n, c in enumerate(contestants)}
    k = len(contestants)
    rows = np.zeros((len(votes), k * k))
    for n, vote in enumerate(votes):
        a, b = index[vote.a], index[vote.b]
        if vote.outcome is Outcome.A:
            rows[n, a * k + b] = 1.0
        elif vote.outcome is Outcome.B:
            rows[n, b * k + a] = 1.0
        else:
            rows[n, a * k + b] = rows[n, b * k + a] = 0.5
    return rows


def fit_log_strengths(scores: FloatArray) -> FloatArray:
    """The Bradley–Terry log-strengths θ (p = e^θ) for one score matrix, or for a stack of them
    (shape (..., k, k)) at once, by Newton's method on the log-likelihood with the virtual tie
    against the reference (which makes it strictly concave, so the maximum is unique)."""
    games = scores + np.swapaxes(scores, -1, -2)
    won = scores.sum(axis=-1) + 0.5
    theta = np.zeros(scores.shape[:-1])
    for _ in range(_MAX_ITERATIONS):
        beats = _sigmoid(theta[..., :, None] - theta[..., None, :])
        versus_reference = _sigmoid(theta)
        gradient = won - (games * beats).sum(axis=-1) - versus_reference
        weight = games * beats * (1 - beats)
        hessian = (
            weight
            - np.eye(scores.shape[-1])
            * (weight.sum(axis=-1) + versus_reference * (1 - versus_reference))[..., None]
        )
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        # A full Newton step can overshoot far from the optimum: no log-strength moves more than 2.
        step = step * np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(axis=-1, keepdims=True), 1e-300))
        theta = theta - step
        if np.abs(step).max() < _TOLERANCE:
            break
    return theta


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 0.5 * (1 + np.tanh(x / 2))  # no overflow warning for large |x|
    return result


def to_rating(log_strengths: FloatArray) -> FloatArray:
    result: FloatArray = SCALE_BASE + SCALE_POINTS * log_strengths / np.log(10)
    return result


def leaderboard(votes: Iterable[Vote], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Leaderboard:
    """Ratings, intervals and records of every contestant in `votes`. The bootstrap is seeded,
    so the same votes always give the same table."""
    votes = list(votes)
    contestants = sorted({c for vote in votes for c in (vote.a, vote.b)})
    if not contestants:
        return Leaderboard(ratings=(), votes=0)
    k = len(contestants)
    per_vote = vote_scores(votes, contestants)
    ratings = to_rating(fit_log_strengths(per_vote.sum(axis=0).reshape(k, k)))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(votes), np.full(len(votes), 1 / len(votes)), size=samples)
    spread = to_rating(fit_log_strengths((counts @ per_vote).reshape(samples, k, k)))
    lower, upper = np.percentile(spread, [2.5, 97.5], axis=0)
    rows = []
    for n, contestant in enumerate(contestants):
        wins = losses = ties = 0
        for vote in votes:
            if contestant not in (vote.a, vote.b):
                continue
            if vote.outcome in (Outcome.TIE, Outcome.BOTH_BAD):
                ties += 1
            elif (vote.outcome is Outcome.A) == (vote.a == contestant):
                wins += 1
            else:
                losses += 1
        rows.append(
            Rating(contestant, float(ratings[n]), float(lower[n]), float(upper[n]), wins, losses, ties)
        )
    rows.sort(key=lambda row: (-row.rating, row.contestant.label))
    return Leaderboard(ratings=tuple(rows), votes=len(votes))
