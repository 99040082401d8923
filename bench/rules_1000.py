"""How fast does the rule core judge one event against 1,000 rules?

Generates a pack of 1,000 rules over 100 campaigns (``rulepack.py``) and
times, for a purchase and for an interaction:

- ``rule-engine``'s own evaluation of every rule's condition (the reference);
- every condition through the compiled closures, without the index;
- the engine as the event path calls it (``evaluate(..., matched_only=True)``:
  the index by type, channel and name, then the compiled conditions, chance
  draws and decisions of the rules that match).

It checks that all three find the same matching rules, then prints medians
and the ratio to the reference. Target: at least 20 times faster.

    .venv/bin/python bench/rules_1000.py [--rules-per-campaign 10] [--campaigns 100] [--repeat 25]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from rulepack import write_pack

from service.rules import engine
from service.rules.compiled import ERRORS, compile_condition
from service.rules.facts import build_facts
from service.rules.loader import load_rule_set
from service.rules.ruleset import RuleSet

AT = dt.datetime(2026, 6, 2, 11, 30, tzinfo=dt.UTC)
PROFILE: dict[str, Any] = {
    "customer_id": "c-1",
    "purchase_count": 4,
    "return_count": 0,
    "lifetime_spend": Decimal("640.00"),
    "favourite_category": "lamps",
    "first_purchase_at": AT - dt.timedelta(days=200),
    "last_purchase_at": AT - dt.timedelta(days=41),
    "interaction_counts": {"review_posted": 2},
    "points_balance": 300,
    "attributes": {"first_name": "Ana", "segments": ["vip"]},
}
EVENTS: dict[str, dict[str, Any]] = {
    "purchase": {
        "event_id": "e-1",
        "type": "purchase",
        "customer_id": "c-1",
        "occurred_at": AT,
        "channel": "pos",
        "store_id": "madrid-1",
        "order": {
            "order_id": "o-1",
            "total": 135.0,
            "currency": "EUR",
            "items": [
                {"sku": "LMP-1", "category": "lamps", "quantity": 1, "unit_price": 95.0},
                {"sku": "TXT-4", "category": "textiles", "quantity": 2, "unit_price": 20.0},
            ],
        },
        "attributes": {},
    },
    "interaction": {
        "event_id": "e-2",
        "type": "interaction",
        "name": "review_posted",
        "customer_id": "c-1",
        "occurred_at": AT,
        "channel": "web",
        "attributes": {"rating": "5"},
    },
}


def by_rule_engine(rule_set: RuleSet, facts: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for campaign in rule_set.campaigns:
        for rule in campaign.rules:
            try:
                if rule.condition.matches(facts):
                    found.add((campaign.name, rule.id))
            except ERRORS:
                pass
    return found


Compiled = list[tuple[str, str, Callable[[dict[str, Any]], bool]]]


def compile_all(rule_set: RuleSet) -> Compiled:
    """Every rule's whole condition as one compiled closure, compiled before anything is timed."""
    return [(c.name, r.id, compile_condition(r.condition)) for c in rule_set.campaigns for r in c.rules]


def by_compiled(compiled: Compiled, facts: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for campaign, rule_id, matches in compiled:
        try:
            if matches(facts):
                found.add((campaign, rule_id))
        except ERRORS:
            pass
    return found


def by_engine(rule_set: RuleSet, facts: dict[str, Any]) -> set[tuple[str, str]]:
    return {(o.campaign, o.rule_id) for o in engine.evaluate(rule_set, facts, matched_only=True)}


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: the index fills its entry for this event's key on first use
    loops, times = 1, []
    while True:  # enough loops per sample for the clock to resolve it
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - started > 0.02:
            break
        loops *= 2
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - started) / loops)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--rules-per-campaign", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delight-rules-") as tmp:
        rule_set = load_rule_set(write_pack(Path(tmp), args.campaigns, args.rules_per_campaign))
    compiled_rules = compile_all(rule_set)
    print(f"# {rule_set.rule_count} rules in {len(rule_set.campaigns)} campaigns")
    worst = float("inf")
    for name, event in EVENTS.items():
        facts = build_facts(event, PROFILE, rule_set.zone)
        reference = by_rule_engine(rule_set, facts)
        assert by_compiled(compiled_rules, facts) == reference, "compiled conditions disagree with rule-engine"
        assert by_engine(rule_set, facts) == reference, "the engine disagrees with rule-engine"
        candidates = len(rule_set.candidates((facts["type"], facts["channel"], facts["name"])))
        slow = median_seconds(lambda f=facts: by_rule_engine(rule_set, f), args.repeat)
        compiled = median_seconds(lambda f=facts: by_compiled(compiled_rules, f), args.repeat)
        fast = median_seconds(lambda f=facts: by_engine(rule_set, f), args.repeat)
        worst = min(worst, slow / fast)
        print(
            f"{name}: {len(reference)} rules match, {candidates} evaluated after the index; "
            f"rule-engine {slow * 1e6:,.0f} µs, compiled (all rules) {compiled * 1e6:,.0f} µs "
            f"({slow / compiled:.1f}x), engine {fast * 1e6:,.0f} µs ({slow / fast:.1f}x)"
        )
    print(f"slowest ratio {worst:.1f}x; target >= 20x")


if __name__ == "__main__":
    main()
