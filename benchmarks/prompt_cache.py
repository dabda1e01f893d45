"""How much of each prompt a server serves from its prompt cache, at the context limit, under
`drop_oldest` and `stable_prefix`: the same chat sent through the real `openai` SDK to the local
test server (in a process of its own) with its prompt cache on.

A chat of TURNS questions on a BUDGET-token budget reaches the limit after about a dozen turns;
from then on `drop_oldest` drops the oldest exchange on every turn, changing the prompt's start,
while `stable_prefix` drops down to 65% of the budget now and then and only appends between.
The share of prompt tokens served from cache is what the server reported in
`usage.prompt_tokens_details.cached_tokens`, over all turns and over the turns at the limit
(from the first drop on); the cost is the dashboard's, at gpt-4o-mini's input, cached-input and
output prices. Both cache rules are measured: a plain prefix cache (llama.cpp's server, vLLM)
and OpenAI's (1,024 tokens on, in blocks of 128). Target: stable_prefix serves >= 80% of prompt
tokens at the limit from a prefix cache.

Run: python -m benchmarks.prompt_cache [--turns N] [--budget TOKENS]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from core.chat.conversation import Conversation
from core.chat.session import ChatSession
from core.chat.settings import ChatSettings, PolicyName
from core.counting.model_info import load_model_table
from core.providers.backends import OpenAIBackend
from core.stats import totals
from tests.openai_server import server_process

MODEL = "gpt-4o-mini"
SYSTEM = (
    "You are a patient cooking assistant. Answer in a few sentences, name quantities in grams "
    "and temperatures in degrees Celsius, and say which steps can be done the day before."
)
TOPICS = ("dumplings", "risotto", "sourdough", "ramen broth", "paella", "tarte tatin", "dal", "pho")
TURNS = 60
BUDGET = 2000
TARGET = 0.80
POLICIES: tuple[PolicyName, ...] = ("drop_oldest", "stable_prefix")
PRICES = load_model_table()


def question(i: int) -> str:
    """Questions of varied length (about 25 to 60 tokens), as a chat has."""
    topic = TOPICS[i % len(TOPICS)]
    detail = " and what goes wrong most often when people try it at home for the first time" * (i % 3)
    return f"Question {i + 1}: how do I make {topic} for {i % 5 + 2} people{detail}?"


@dataclass(frozen=True)
class Run:
    policy: PolicyName
    rule: str
    prompt_tokens: int
    cached_tokens: int
    limit_prompt_tokens: int
    limit_cached_tokens: int
    limit_turns: int
    drops: int
    cost: float
    uncached_cost: float

    @property
    def share(self) -> float:
        return self.cached_tokens / self.prompt_tokens

    @property
    def limit_share(self) -> float:
        return self.limit_cached_tokens / self.limit_prompt_tokens if self.limit_prompt_tokens else 0.0


def run(policy: PolicyName, rule: str, turns: int, budget: int) -> Run:
    with server_process(prompt_cache=rule) as url:
        backend = OpenAIBackend("sk-benchmark", f"{url}/v1", timeout=30.0, max_retries=0)
        settings = ChatSettings(model=MODEL, context_budget=budget, context_policy=policy)
        session = ChatSession(Conversation(SYSTEM, settings), backend)
        for i in range(turns):
            for _ in session.send(question(i)):
                pass
    conversation = session.conversation
    assert len(conversation.turns) == turns and all(
        t.reported_cached_tokens is not None for t in conversation.turns
    )
    first_drop = min((event.turn for event in conversation.trim_events), default=turns + 1)
    at_limit = [turn for turn in conversation.turns if turn.number >= first_drop]
    total = totals(conversation, PRICES)
    assert total.cost is not None and total.cache_saved is not None
    return Run(
        policy=policy,
        rule=rule,
        prompt_tokens=total.prompt_tokens,
        cached_tokens=total.cached_tokens,
        limit_prompt_tokens=sum(turn.prompt_tokens for turn in at_limit),
        limit_cached_tokens=sum(turn.cached_tokens for turn in at_limit),
        limit_turns=len(at_limit),
        drops=len(conversation.trim_events),
        cost=total.cost,
        uncached_cost=total.cost + total.cache_saved,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--budget", type=int, default=BUDGET)
    args = parser.parse_args(argv)
    print(
        f"model {MODEL}, context budget {args.budget:,} tokens, {args.turns} turns, real SDK, local server\n"
    )
    header = (
        f"{'cache rule':>10} | {'policy':>13} | {'drops':>5} | {'at limit':>8} | {'cached, all':>11} | "
        f"{'cached, at limit':>16} | {'cost $':>9} | {'no cache $':>10}"
    )
    print(header)
    print("-" * len(header))
    results = []
    for rule in ("prefix", "openai"):
        for policy in POLICIES:
            result = run(policy, rule, args.turns, args.budget)
            results.append(result)
            print(
                f"{rule:>10} | {policy:>13} | {result.drops:>5} | {result.limit_turns:>8} | "
                f"{result.share:>11.1%} | {result.limit_share:>16.1%} | {result.cost:>9.6f} | "
                f"{result.uncached_cost:>10.6f}"
            )
    stable = next(r for r in results if r.rule == "prefix" and r.policy == "stable_prefix")
    verdict = "met" if stable.limit_share >= TARGET else "MISSED"
    share = f"{stable.limit_share:.1%} (target {TARGET:.0%}: {verdict})"
    print(f"\nstable_prefix at the limit on a prefix cache: {share}")


if __name__ == "__main__":
    main()
