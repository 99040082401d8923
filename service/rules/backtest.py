"""``backtest``: what a draft rule set would have done with the stored events, writing nothing.

Events are replayed in the order they arrived, which is the order the live
engine judged them in. Every event updates a simulated profile of its
customer (a pure mirror of the SQL upsert); events whose ``occurred_at`` falls
in the period are also run through the rules with fresh, in-memory limits,
budgets and stock. The chance draws and holdout groups are the live ones, so
the same rules on the same events give the same winners as live.

One pass can judge the events by several rule sets at once (``replay``),
each with its own counters and award logs: ``impact`` compares a draft with
the rule set in force that way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.controls import plan as controls
from service.controls.plan import LogEntry, MemoryCounters
from service.customers.profile import OrderTotals, apply_delta, count_into_order, delta_for, empty_profile
from service.events.schemas import EventIn
from service.reports import stats
from service.rules import engine
from service.rules.facts import build_facts
from service.rules.ruleset import RuleSet

PLAN_WINDOW = dt.timedelta(days=30)
"""The repeat window of the plan's baseline: a purchase within 30 days of a customer's first exposure."""

# An archived month's events have no payload left to replay (``DELIGHT_RETENTION_DAYS``): the replay starts after.
STREAM = text("SELECT payload::text AS payload FROM events WHERE payload IS NOT NULL ORDER BY received_at, event_id")
BATCH = 5000
YIELD_EVERY = 200
"""Events replayed between two turns given to the rest of the process: a back-test the console runs inside
``delight serve`` then holds up the tills' requests on its worker for about ten milliseconds at a time, not for
the whole replay."""


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
    holdout: float = 0.0
    exposed: dict[str, dt.datetime] = field(default_factory=dict)
    """Customers given an award of this rule or held out from one, with the first time."""
    repeated: set[str] = field(default_factory=set)
    """Those of ``exposed`` who bought again within ``PLAN_WINDOW`` of it (in the stored history)."""
    plan: dict[str, Any] | None = None

    def settle_plan(self, last_seen: dt.datetime | None) -> None:
        """The power plan (as the uplift report's) from the exposures and repeats the replay saw."""
        closed = [c for c, t0 in self.exposed.items() if last_seen and t0 + PLAN_WINDOW <= last_seen]
        baseline = sum(1 for c in closed if c in self.repeated) / len(closed) if len(closed) >= 30 else None
        starts = self.exposed.values()
        per_day = stats.per_day(len(starts), min(starts, default=None), max(starts, default=None))
        mde = stats.enrolment_plan(baseline, self.holdout, per_day)
        self.plan = {
            "customers_per_day": round(per_day, 2) if per_day else None,
            "baseline_repeat_rate": None if baseline is None else round(baseline, 6),
            "holdout": self.holdout,
            "detectable_uplift_30d": mde[30],
            "detectable_uplift_90d": mde[90],
        }

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
        if self.plan is not None:
            row["plan"] = self.plan
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


class Replay:
    """One rule set judging replayed events: its tallies, its in-memory counters, and each customer's award log
    as this rule set would have left it (what its limits and fatigue read).

    The profiles are not its own: they follow from the events alone, so ``replay`` keeps one per customer for
    every rule set judging the same stream.
    """

    def __init__(self, rule_set: RuleSet) -> None:
        self.rule_set = rule_set
        self.tallies = {
            (c.name, r.id): RuleTally(c.name, r.id, holdout=c.holdout) for c in rule_set.campaigns for r in c.rules
        }
        self._planned = {key for key, tally in self.tallies.items() if 0 < tally.holdout < 1}  # a plan needs one
        # Customers exposed, with the rules they were exposed to: tuples of strings, untracked by the GC.
        self._watching: dict[str, tuple[tuple[str, str], ...]] = {}
        self._logs: dict[str, list[list[Any]]] = {}
        self._counters = MemoryCounters()
        self._zone = rule_set.zone

    def repeat(self, purchase: EventIn) -> None:
        """Any stored purchase, in the period or not: it may be the repeat of an exposure a plan's baseline counts."""
        for watched in self._watching.get(purchase.customer_id, ()):
            tally = self.tallies[watched]
            t0 = tally.exposed[purchase.customer_id]
            if t0 < purchase.occurred_at <= t0 + PLAN_WINDOW:
                tally.repeated.add(purchase.customer_id)

    def feed(self, event: EventIn, event_data: dict[str, Any], profile: dict[str, Any]) -> None:
        """Judge an event of the period, ``profile`` being its customer's once the event is counted."""
        rule_set, tallies, customer_id = self.rule_set, self.tallies, event.customer_id
        facts = build_facts(event_data, profile, self._zone)
        outcomes = engine.evaluate(rule_set, facts, matched_only=True, time_limit=engine.REPLAY_TIME_LIMIT)
        for outcome in outcomes:
            tallies[(outcome.campaign, outcome.rule_id)].matches += 1
        history = [LogEntry.from_json(e) for e in self._logs.get(customer_id, ())]
        plan = controls.plan(rule_set, facts, outcomes, history)
        if not plan.candidates:
            return
        counters = self._counters
        chosen = [plan.candidates[p] for p in controls.accept(plan, counters.take, counters.room, counters.give_back)]
        at = int(event.occurred_at.timestamp())
        for candidate in chosen:
            key = (candidate.campaign, candidate.outcome.rule_id)
            tally = tallies[key]
            if key in self._planned and customer_id not in tally.exposed:
                tally.exposed[customer_id] = event.occurred_at
                self._watching[customer_id] = (*self._watching.get(customer_id, ()), key)
            if candidate.group == "control":
                tally.held_out += 1
                continue
            decision = candidate.outcome.decision
            assert decision is not None
            tally.awards += 1
            tally.cost += decision.cost
            tally.customers.add(customer_id)
            if decision.variant is not None:
                tally.variants[decision.variant] = tally.variants.get(decision.variant, 0) + 1
        self._logs[customer_id] = controls.log_after(
            history, [LogEntry(at, c.campaign, c.outcome.rule_id, event.type == "interaction") for c in chosen]
        )

    def awarded(self) -> set[str]:
        """Customers given at least one award by any rule."""
        return set().union(*(t.customers for t in self.tallies.values()))

    def report(self, stream: Stream) -> Report:
        for tally in self.tallies.values():
            tally.settle_plan(stream.last_seen)
        tallies = list(self.tallies.values())
        return Report(self.rule_set.version, stream.start, stream.end, stream.read, stream.in_period, tallies)


@dataclass(frozen=True, slots=True)
class Stream:
    """What one pass over the stored events saw."""

    start: dt.datetime
    end: dt.datetime
    read: int
    in_period: int
    last_seen: dt.datetime | None


async def replay(
    replays: Sequence[Replay], events: AsyncIterator[EventIn], start: dt.datetime, end: dt.datetime
) -> Stream:
    """Replay ``events`` (in arrival order) once for all of ``replays``: every event updates its customer's
    profile, and each replay judges those with ``start <= occurred_at < end``."""
    profiles: dict[str, dict[str, Any]] = {}
    orders: OrderTotals = {}
    last_seen: dt.datetime | None = None
    read = in_period = 0
    async for event in events:
        read += 1
        if read % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if last_seen is None or event.occurred_at > last_seen:
            last_seen = event.occurred_at
        if event.type == "purchase":
            for judge in replays:
                judge.repeat(event)
        attributes = msgspec.to_builtins(event.customer) if event.customer else {}
        before = profiles.get(event.customer_id) or empty_profile(event.customer_id)
        profile = apply_delta(before, delta_for(event, attributes))
        # A return's refund counts into lifetime spend after its own rules judged it, as on the event path.
        if event.order is not None and event.type != "interaction":
            profiles[event.customer_id] = count_into_order(profile, orders, event)
        else:
            profiles[event.customer_id] = profile
        if not start <= event.occurred_at < end:
            continue
        in_period += 1
        event_data = msgspec.to_builtins(event, builtin_types=(dt.datetime, dt.date))
        for judge in replays:
            judge.feed(event, event_data, profile)
    return Stream(start, end, read, in_period, last_seen)


async def backtest(rule_set: RuleSet, events: AsyncIterator[EventIn], start: dt.datetime, end: dt.datetime) -> Report:
    """Replay ``events`` (in arrival order); rules judge those with ``start <= occurred_at < end``."""
    judge = Replay(rule_set)
    return judge.report(await replay([judge], events, start, end))


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
        plan = t.plan or {}
        if plan.get("detectable_uplift_30d") is not None:
            lines.append(
                f"{'':<20}   plan: {plan['customers_per_day']:g} customers a day, {plan['holdout'] * 100:g}% held out, "
                f"{plan['baseline_repeat_rate'] * 100:.1f}% repeat within 30 days: detects "
                f"{plan['detectable_uplift_30d'] * 100:.1f} points in 30 days of enrolment, "
                f"{plan['detectable_uplift_90d'] * 100:.1f} in 90 (80% power)"
            )
    return "\n".join(lines)
