"""``backtest``: what a draft rule set would have done with the stored events, writing nothing.

Events are replayed in the order they arrived, which is the order the live
engine judged them in. Every event updates a simulated profile of its
customer (a pure mirror of the SQL upsert); events whose ``occurred_at`` falls
in the period are also run through the rules with fresh, in-memory limits,
budgets and stock. The chance draws and holdout groups are the live ones, so
the same rules on the same events give the same winners as live.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.controls import plan as controls
from service.controls.plan import LogEntry, MemoryCounters
from service.customers.profile import apply_delta, count_into_order, delta_for, empty_profile
from service.events.schemas import EventIn
from service.rules import engine
from service.rules.facts import build_facts
from service.rules.ruleset import RuleSet

STREAM = text("SELECT payload::text AS payload FROM events ORDER BY received_at, event_id")
BATCH = 5000


@dataclass(slots=True)
class RuleTally:
    campaign: str
    rule_id: str
    matches: int = 0
    awards: int = 0
    held_out: int = 0
    cost: Decimal = Decimal(0)
    customers: set[str] = field(default_factory=set)
    variants: dict[str, int] = field(default_factory=dict)
    """Awards by reward variant, for a rule with ``one_of``."""

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "campaign": self.campaign,
            "rule_id": self.rule_id,
            "matches": self.matches,
            "awards": self.awards,
            "held_out": self.held_out,
            "customers": len(self.customers),
            "cost": float(self.cost),
        }
        if self.variants:
            row["variants"] = dict(sorted(self.variants.items()))
        return row


@dataclass(slots=True)
class Report:
    version: str
    start: dt.datetime
    end: dt.datetime
    events_read: int
    events_in_period: int
    rules: list[RuleTally]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "events_read": self.events_read,
            "events_in_period": self.events_in_period,
            "rules": [t.as_row() for t in self.rules],
        }


async def stored_events(connection: AsyncConnection) -> AsyncIterator[EventIn]:
    decoder = msgspec.json.Decoder(EventIn)
    result = await connection.stream(STREAM.execution_options(yield_per=BATCH))
    async for partition in result.partitions(BATCH):
        for row in partition:
            yield decoder.decode(row.payload)


async def backtest(rule_set: RuleSet, events: AsyncIterator[EventIn], start: dt.datetime, end: dt.datetime) -> Report:
    """Replay ``events`` (in arrival order); rules judge those with ``start <= occurred_at < end``."""
    tallies = {(c.name, r.id): RuleTally(c.name, r.id) for c in rule_set.campaigns for r in c.rules}
    profiles: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, list[Decimal]]] = {}  # per customer, per order: paid, refunded
    counters = MemoryCounters()
    read = in_period = 0
    zone = rule_set.zone
    async for event in events:
        read += 1
        attributes = msgspec.to_builtins(event.customer) if event.customer else {}
        before = profiles.get(event.customer_id) or empty_profile(event.customer_id)
        profile = apply_delta(before, delta_for(event, attributes))
        # A return's refund counts into lifetime spend after its own rules judged it, as on the event path.
        profiles[event.customer_id] = count_into_order(profile, orders.setdefault(event.customer_id, {}), event)
        if not start <= event.occurred_at < end:
            continue
        in_period += 1
        event_data = msgspec.to_builtins(event, builtin_types=(dt.datetime, dt.date))
        facts = build_facts(event_data, profile, zone)
        outcomes = engine.evaluate(rule_set, facts, matched_only=True)
        for outcome in outcomes:
            tallies[(outcome.campaign, outcome.rule_id)].matches += 1
        history = [LogEntry.from_json(e) for e in profile["award_log"]]
        plan = controls.plan(rule_set, facts, outcomes, history)
        if not plan.candidates:
            continue
        chosen = [plan.candidates[p] for p in controls.accept(plan, counters.take, counters.room, counters.give_back)]
        at = int(event.occurred_at.timestamp())
        for candidate in chosen:
            tally = tallies[(candidate.campaign, candidate.outcome.rule_id)]
            if candidate.group == "control":
                tally.held_out += 1
                continue
            decision = candidate.outcome.decision
            assert decision is not None
            tally.awards += 1
            tally.cost += decision.cost
            tally.customers.add(event.customer_id)
            if decision.variant is not None:
                tally.variants[decision.variant] = tally.variants.get(decision.variant, 0) + 1
        profiles[event.customer_id]["award_log"] = controls.log_after(
            history, [LogEntry(at, c.campaign, c.outcome.rule_id, event.type == "interaction") for c in chosen]
        )
    return Report(rule_set.version, start, end, read, in_period, list(tallies.values()))


def render_table(report: Report) -> str:
    header = (
        f"{'campaign':<20} {'rule_id':<28} {'matches':>8} {'awards':>7} {'held out':>8} {'customers':>9} {'cost':>11}"
    )
    lines = [
        f"rule set {report.version}, events from {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d} "
        f"(exclusive): {report.events_in_period} of {report.events_read} stored events",
        header,
        "-" * len(header),
    ]
    for t in report.rules:
        lines.append(
            f"{t.campaign:<20} {t.rule_id:<28} {t.matches:>8} {t.awards:>7} {t.held_out:>8} "
            f"{len(t.customers):>9} {t.cost:>11.2f}"
        )
        lines.extend(f"{'':<20}   variant {name:<18} {'':>8} {n:>7}" for name, n in sorted(t.variants.items()))
    return "\n".join(lines)
