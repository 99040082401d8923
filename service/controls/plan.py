"""The surprise controls as pure logic: who is held out, what limits allow, which counters to draw.

``plan`` turns the rules that fired for one event into ordered candidates,
after the holdout draw and the per-rule limit; ``accept`` walks them applying
the campaign limit and the fatigue cap, drawing every counter a candidate
needs (budget, daily pacing, stock). Live, PostgreSQL runs the same walk in
one statement (``delight_reserve`` in migration 0002) so that counters hold
exactly under concurrency; ``simulate`` and ``backtest`` run ``accept`` here
against counters kept in memory.

Limits count surprises in event time, both ways: "1 per 90d" means no two
surprises of that rule closer than 90 days, so a late event is judged by
when it happened. Held-out customers count like treated ones, so the two
groups stay comparable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from service.rules.engine import Outcome, decide, draw
from service.rules.ruleset import Campaign, Limit, Rule, RuleSet

Group = Literal["treatment", "control"]
SHARDS = 16
LOG_LIMIT = 500
"""Most entries kept in a customer's surprise log."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One past surprise of a customer: when (epoch seconds, event time), which campaign and rule."""

    at: int
    campaign: str
    rule_id: str
    interaction: bool = False  # earned by an interaction event (counted against the interaction cap)

    def to_json(self) -> list[Any]:
        return [self.at, self.campaign, self.rule_id, 1] if self.interaction else [self.at, self.campaign, self.rule_id]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> LogEntry:
        return cls(int(raw[0]), str(raw[1]), str(raw[2]), len(raw) > 3 and bool(raw[3]))


@dataclass(frozen=True, slots=True)
class Take:
    """One counter a candidate draws from: one unit and ``cents`` of money, within the caps."""

    key: str
    cap_n: int | None
    cap_cents: int | None
    cents: int


@dataclass(frozen=True, slots=True)
class Candidate:
    outcome: Outcome
    group: Group
    takes: tuple[Take, ...]
    priority: int
    chain: int | None = None
    """The variants of one rule, in the order the customer is offered them, share a chain: one is tried only
    when every one before it failed on its counters (out of stock, say), and at most one is given."""
    drawn: str | None = None
    """The variant drawn for the customer, on every candidate of its chain."""
    programme: bool = False
    """Held out by the programme-wide holdout (``group`` is then control, whatever the campaign's holdout)."""

    @property
    def campaign(self) -> str:
        return self.outcome.campaign


@dataclass(slots=True)
class Plan:
    candidates: list[Candidate]
    campaign_slots: dict[str, int]
    fatigue_slots: int | None
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    """Why a rule that fired gives nothing: ``(campaign, rule_id) -> reason``."""

    @property
    def needs_counters(self) -> bool:
        return any(c.takes for c in self.candidates)


PROGRAMME = "*"  # the programme's draw stands where a campaign's name would, and no campaign can be named so


def programme_held(rule_set: RuleSet, customer_id: str) -> bool:
    """Whether the programme-wide holdout keeps every surprise from this customer: a keyed hash of the customer
    id against ``programme_holdout``, so a customer's place only changes when the share does."""
    share = rule_set.settings.programme_holdout
    return share > 0 and draw(rule_set.settings.seed, "holdout", PROGRAMME, customer_id) < share


def holdout_group(rule_set: RuleSet, campaign: Campaign, customer_id: str) -> Group:
    """Sticky per customer and campaign: a keyed hash, not a coin toss per event."""
    if campaign.holdout <= 0:
        return "treatment"
    value = draw(rule_set.settings.seed, "holdout", campaign.name, customer_id)
    return "control" if value < campaign.holdout else "treatment"


def used(
    log: Iterable[LogEntry],
    at: int,
    limit: Limit,
    *,
    campaign: str | None = None,
    rule_id: str | None = None,
    interactions: bool = False,
) -> int:
    """How many logged surprises fall within the limit's span of ``at`` (either side)."""
    return sum(
        1
        for entry in log
        if abs(entry.at - at) < limit.seconds
        and (campaign is None or entry.campaign == campaign)
        and (rule_id is None or entry.rule_id == rule_id)
        and (not interactions or entry.interaction)
    )


def home_shard(event_id: str) -> int:
    return zlib.crc32(event_id.encode()) % SHARDS


def _cents(amount: Decimal | None) -> int | None:
    return None if amount is None else int((amount * 100).to_integral_value())


def takes_for(rule: Rule, campaign: Campaign, local_day: dt.date) -> tuple[Take, ...]:
    """The counters one award of ``rule`` draws from, in a fixed order (fewer lock waits between events)."""
    cost = _cents(rule.cost) or 0
    takes = []
    budget = campaign.budget
    if budget is not None and (budget.awards is not None or budget.cost is not None):
        takes.append(Take(f"budget:{campaign.name}", budget.awards, _cents(budget.cost), cost))
    if budget is not None and (budget.daily_awards is not None or budget.daily_cost is not None):
        takes.append(
            Take(f"daily:{campaign.name}:{local_day.isoformat()}", budget.daily_awards, _cents(budget.daily_cost), cost)
        )
    if rule.gift is not None and rule.gift.stock is not None:
        takes.append(Take(f"stock:{rule.gift.id}", rule.gift.stock, None, 0))
    return tuple(sorted(takes, key=lambda t: t.key))


def plan(rule_set: RuleSet, facts: dict[str, Any], outcomes: Sequence[Outcome], log: Sequence[LogEntry]) -> Plan:
    occurred_at: dt.datetime = facts["occurred_at"]
    at = int(occurred_at.timestamp())
    customer_id: str = facts["customer_id"]
    campaigns = rule_set.by_name
    rules = rule_set.rules_by_key
    notes: dict[tuple[str, str], str] = {}
    cap = rule_set.interaction_cap
    if facts.get("type") == "interaction" and used(log, at, cap, interactions=True) >= cap.count:
        # No farming gifts with scripted interactions: past the cap they earn nothing.
        for outcome in outcomes:
            if outcome.decision is not None:
                notes[(outcome.campaign, outcome.rule_id)] = "interaction award cap reached for this customer"
        return Plan([], {}, None, notes)
    candidates = []
    held = programme_held(rule_set, customer_id)
    for outcome in outcomes:
        if outcome.decision is None:
            continue
        rule = rules[(outcome.campaign, outcome.rule_id)]
        campaign = campaigns[outcome.campaign]
        if (
            rule.limit is not None
            and used(log, at, rule.limit, campaign=campaign.name, rule_id=rule.id) >= rule.limit.count
        ):
            notes[(campaign.name, rule.id)] = "rule limit reached for this customer"
            continue
        group = "control" if held else holdout_group(rule_set, campaign, customer_id)
        if not rule.variants:
            candidates.append(
                Candidate(outcome, group, takes_for(rule, campaign, occurred_at.date()), rule.priority, programme=held)
            )
            continue
        order = rule.variant_order(rule_set.settings.seed, customer_id)
        for variant in order:
            decision = outcome.decision if variant is order[0] else decide(rule_set, variant, facts)
            if decision is None:  # an offer whose category renders empty for this customer
                continue
            candidates.append(
                Candidate(
                    dataclasses.replace(outcome, decision=decision),
                    group,
                    takes_for(variant, campaign, occurred_at.date()),
                    rule.priority,
                    chain=len(candidates) if variant is order[0] else candidates[-1].chain,
                    drawn=order[0].variant,
                    programme=held,
                )
            )
    candidates.sort(key=lambda c: -c.priority)  # stable: otherwise campaign and file order
    slots = {
        c.name: c.limit.count - used(log, at, c.limit, campaign=c.name)
        for c in rule_set.campaigns
        if c.limit is not None and any(k.campaign == c.name for k in candidates)
    }
    fatigue = rule_set.fatigue
    fatigue_slots = None if fatigue is None else fatigue.count - used(log, at, fatigue)
    return Plan(candidates, slots, fatigue_slots, notes)


def accept(
    plan: Plan, take: Callable[[Take], bool], room: Callable[[Take], bool], give_back: Callable[[Take], None]
) -> list[int]:
    """The positions of the candidates that are given (or, for the control group, recorded).

    Mirrors ``delight_reserve``: candidates in order; the fatigue cap and the
    campaign limit as slots; a treated candidate draws all its counters or none;
    a held-out one only needs them to have room.
    """
    accepted = []
    fatigue = plan.fatigue_slots
    slots = dict(plan.campaign_slots)
    closed: set[int] = set()  # chains given a variant, or stopped by a limit
    for position, candidate in enumerate(plan.candidates):
        if candidate.chain is not None:
            if candidate.chain in closed:
                continue
            closed.add(candidate.chain)  # opened again below when its counters are what failed
        if fatigue is not None and fatigue <= 0:
            plan.notes.setdefault(_key(candidate), "fatigue cap reached for this customer")
            continue
        if slots.get(candidate.campaign, 1) <= 0:
            plan.notes.setdefault(_key(candidate), "campaign limit reached for this customer")
            continue
        if candidate.group == "control":
            ok = all(room(t) for t in candidate.takes)
        else:
            taken: list[Take] = []
            for t in candidate.takes:
                if not take(t):
                    break
                taken.append(t)
            ok = len(taken) == len(candidate.takes)
            if not ok:
                for t in taken:
                    give_back(t)
        if not ok:
            plan.notes.setdefault(_key(candidate), "budget, daily pacing or stock spent")
            if candidate.chain is not None:
                closed.discard(candidate.chain)  # the next variant may be in stock
            continue
        if candidate.chain is not None:
            plan.notes.pop(_key(candidate), None)
        accepted.append(position)
        if fatigue is not None:
            fatigue -= 1
        if candidate.campaign in slots:
            slots[candidate.campaign] -= 1
    return accepted


def _key(candidate: Candidate) -> tuple[str, str]:
    return (candidate.outcome.campaign, candidate.outcome.rule_id)


@dataclass(slots=True)
class MemoryCounters:
    """Counters kept in memory, exact as the sharded ones: for simulate and backtest."""

    n: dict[str, int] = field(default_factory=dict)
    cents: dict[str, int] = field(default_factory=dict)

    def take(self, t: Take) -> bool:
        if not self.room(t):
            return False
        self.n[t.key] = self.n.get(t.key, 0) + 1
        self.cents[t.key] = self.cents.get(t.key, 0) + t.cents
        return True

    def room(self, t: Take) -> bool:
        return (t.cap_n is None or self.n.get(t.key, 0) + 1 <= t.cap_n) and (
            t.cap_cents is None or self.cents.get(t.key, 0) + t.cents <= t.cap_cents
        )

    def give_back(self, t: Take) -> None:
        self.n[t.key] -= 1
        self.cents[t.key] -= t.cents


def reserve_payload(plan: Plan, event_id: str) -> dict[str, Any]:
    """``plan`` as the JSON ``delight_reserve`` reads."""
    home = home_shard(event_id)
    return {
        "fatigue": plan.fatigue_slots,
        "slots": plan.campaign_slots,
        "candidates": [
            {
                "campaign": c.campaign,
                "group": c.group,
                "chain": c.chain,
                "takes": [
                    {"key": t.key, "home": home, "cap_n": t.cap_n, "cap_cents": t.cap_cents, "cents": t.cents}
                    for t in c.takes
                ],
            }
            for c in plan.candidates
        ],
    }


def log_after(log: Sequence[LogEntry], added: Iterable[LogEntry]) -> list[list[Any]]:
    """The customer's log with ``added``, newest ``LOG_LIMIT`` entries kept, as JSON."""
    merged = sorted([*log, *added], key=lambda e: e.at)[-LOG_LIMIT:]
    return [e.to_json() for e in merged]
