"""``simulate``: what the rules would do with one event, and why, without writing anything.

For every rule: whether its campaign is active, the value of each clause of
its condition, the chance draw, the holdout group, the limits and the counters
(budget, pacing, stock) as they stand, and the award it would give with its
message rendered. It runs the same pure core as the live path, on the
customer's stored profile (or one supplied), against counters copied into
memory.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from service.awards.schemas import GiftRef, OfferTerms
from service.controls import plan as controls
from service.controls.plan import LogEntry, MemoryCounters, Take
from service.customers.profile import apply_delta, delta_for, empty_profile
from service.events.schemas import CustomerAttributes, EventIn
from service.rules import clauses, engine
from service.rules.facts import build_facts
from service.rules.loader import CATALOG_FILE, SETTINGS_FILE, load_rule_set_texts
from service.rules.ruleset import Limit, RuleSet


class ProfileIn(Struct, forbid_unknown_fields=True):
    """A customer as they stand before the event, to try a rule on someone who does not exist yet."""

    purchase_count: Annotated[int, Meta(ge=0)] = 0
    return_count: Annotated[int, Meta(ge=0)] = 0
    lifetime_spend: Annotated[float, Meta(ge=0)] = 0
    first_purchase_at: dt.datetime | None = None
    last_purchase_at: dt.datetime | None = None
    category_spend: dict[str, float] = {}
    interaction_counts: dict[str, int] = {}
    points_balance: Annotated[int, Meta(ge=0)] = 0
    attributes: CustomerAttributes | None = None


DRAFT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\.ya?ml$"
MAX_DRAFT_FILES = 100
MAX_DRAFT_CHARS = 1_000_000
DraftName = Annotated[str, Meta(pattern=DRAFT_NAME)]
DraftText = Annotated[str, Meta(max_length=MAX_DRAFT_CHARS)]


class SimulateIn(Struct, forbid_unknown_fields=True):
    event: EventIn
    customer: ProfileIn | None = None
    draft: (
        Annotated[
            dict[DraftName, DraftText],
            Meta(
                max_length=MAX_DRAFT_FILES,
                description="A draft rule set to run the event through instead of the one in force: its files by "
                "name (`settings.yaml`, `catalog.yaml`, campaign files), as text. Its campaigns replace those in "
                "force; without `settings.yaml` or `catalog.yaml` it takes the ones in force.",
            ),
        ]
        | None
    ) = None


def draft_rule_set(in_force: RuleSet, draft: dict[str, str], base: Path = Path("draft")) -> RuleSet:
    """The draft as a rule set (``RuleSetError`` with every error, each named ``BASE/FILE:LINE``), with the
    settings and catalog in force where it has none."""
    kept = {name: text for name, text in in_force.files.items() if name in (SETTINGS_FILE, CATALOG_FILE)}
    return load_rule_set_texts({**kept, **draft}, base)


class ClauseOut(Struct):
    text: str
    value: Any
    error: str | None = None


class LimitOut(Struct):
    per_customer: int
    every_seconds: int
    used: int
    room: bool


class CounterOut(Struct):
    counter: str
    cap_units: int | None
    cap_cost: float | None
    used_units: int
    used_cost: float
    room: bool


class AwardPreview(Struct):
    kind: str
    points: int | None
    gift: GiftRef | None
    offer: OfferTerms | None
    message: str | None
    expires_at: dt.datetime | None
    cost: float
    variant: str | None = None
    """The reward variant this customer is given (for a rule with ``one_of``; the next in stock when the drawn one
    is not)."""


class RuleExplanation(Struct):
    campaign: str
    rule_id: str
    active: bool
    matched: bool
    operator: str
    clauses: list[ClauseOut]
    chance: float
    draw: float | None
    group: str | None
    limit: LimitOut | None
    campaign_limit: LimitOut | None
    fatigue: LimitOut | None
    counters: list[CounterOut]
    outcome: str
    award: AwardPreview | None


class ProfileOut(Struct):
    customer_id: str
    purchase_count: int
    return_count: int
    lifetime_spend: float
    favourite_category: str | None
    interaction_counts: dict[str, int]
    points_balance: int
    attributes: CustomerAttributes


class SimulationOut(Struct):
    version: str
    event_id: str
    customer: ProfileOut
    awards: list[AwardPreview]
    rules: list[RuleExplanation]


def profile_from_input(customer_id: str, given: ProfileIn) -> dict[str, Any]:
    profile = empty_profile(customer_id)
    profile.update(
        purchase_count=given.purchase_count,
        return_count=given.return_count,
        lifetime_spend=Decimal(repr(given.lifetime_spend)),
        first_purchase_at=given.first_purchase_at,
        last_purchase_at=given.last_purchase_at,
        category_spend=dict(given.category_spend),
        interaction_counts=dict(given.interaction_counts),
        points_balance=given.points_balance,
        attributes=msgspec.to_builtins(given.attributes) if given.attributes else {},
    )
    return profile


def counter_keys(rule_set: RuleSet, event: EventIn) -> list[str]:
    day = event.occurred_at.astimezone(rule_set.zone).date()
    return sorted({t.key for c in rule_set.campaigns for r in c.rules for t in controls.takes_for(r, c, day)})


def simulate(
    rule_set: RuleSet, event: EventIn, profile_before: dict[str, Any], usage: dict[str, tuple[int, int]]
) -> SimulationOut:
    event = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(dt.UTC))
    attributes = msgspec.to_builtins(event.customer) if event.customer else {}
    profile = apply_delta(profile_before, delta_for(event, attributes))
    event_data = msgspec.to_builtins(event, builtin_types=(dt.datetime, dt.date))
    facts = build_facts(event_data, profile, rule_set.zone)
    outcomes = engine.evaluate(rule_set, facts)
    history = [LogEntry.from_json(e) for e in profile.get("award_log") or []]
    plan = controls.plan(rule_set, facts, outcomes, history)
    counters = MemoryCounters(n={k: v[0] for k, v in usage.items()}, cents={k: v[1] for k, v in usage.items()})
    accepted = {
        (plan.candidates[p].campaign, plan.candidates[p].outcome.rule_id): plan.candidates[p]
        for p in controls.accept(plan, counters.take, counters.room, counters.give_back)
    }
    at = int(facts["occurred_at"].timestamp())
    local_day = facts["occurred_at"].date()
    by_key = {(o.campaign, o.rule_id): o for o in outcomes}
    explanations = []
    awards = []
    held = controls.programme_held(rule_set, event.customer_id)
    for campaign in rule_set.campaigns:
        active = campaign.is_active(facts["occurred_at"])
        for rule in campaign.rules:
            outcome = by_key[(campaign.name, rule.id)]
            operator, parts = clauses.split(rule.when)
            evaluated = [ClauseOut(text, *_jsonable(clauses.evaluate(text, facts))) for text in parts]
            chosen = accepted.get((campaign.name, rule.id))
            decision = chosen.outcome.decision if chosen is not None else outcome.decision  # a variant in stock
            preview = _preview(decision) if decision else None
            drawn = rule.variant_order(rule_set.settings.seed, event.customer_id)[0]
            if chosen is not None and chosen.group == "treatment" and preview is not None:
                awards.append(preview)
            explanations.append(
                RuleExplanation(
                    campaign=campaign.name,
                    rule_id=rule.id,
                    active=active,
                    matched=outcome.matched,
                    operator=operator,
                    clauses=evaluated,
                    chance=rule.chance,
                    draw=outcome.draw,
                    group=(
                        ("control" if held else controls.holdout_group(rule_set, campaign, event.customer_id))
                        if active
                        else None
                    ),
                    limit=_limit(rule.limit, history, at, campaign=campaign.name, rule_id=rule.id),
                    campaign_limit=_limit(campaign.limit, history, at, campaign=campaign.name),
                    fatigue=_limit(rule_set.fatigue, history, at),
                    counters=[_counter(t, usage) for t in controls.takes_for(drawn, campaign, local_day)],
                    outcome=_verdict(outcome, chosen, plan.notes.get((campaign.name, rule.id))),
                    award=preview,
                )
            )
    return SimulationOut(
        version=rule_set.version,
        event_id=event.event_id,
        customer=ProfileOut(
            customer_id=profile["customer_id"],
            purchase_count=profile["purchase_count"],
            return_count=profile["return_count"],
            lifetime_spend=float(profile["lifetime_spend"]),
            favourite_category=profile["favourite_category"],
            interaction_counts={k: int(v) for k, v in profile["interaction_counts"].items()},
            points_balance=profile["points_balance"],
            attributes=msgspec.convert(profile["attributes"], CustomerAttributes),
        ),
        awards=awards,
        rules=explanations,
    )


def _verdict(outcome: engine.Outcome, chosen: controls.Candidate | None, note: str | None) -> str:
    if outcome.decision is None:
        return outcome.reason
    if chosen is None:
        return note or "not given"
    if chosen.programme:
        return "held out: the customer is in the programme holdout, whom no campaign surprises (recorded, gets nothing)"
    if chosen.group == "control":
        return "held out: the customer is in the control group (recorded, gets nothing)"
    return "awarded"


def _limit(
    limit: Limit | None, history: list[LogEntry], at: int, *, campaign: str | None = None, rule_id: str | None = None
) -> LimitOut | None:
    if limit is None:
        return None
    used = controls.used(history, at, limit, campaign=campaign, rule_id=rule_id)
    return LimitOut(limit.count, limit.seconds, used, used < limit.count)


def _counter(take: Take, usage: dict[str, tuple[int, int]]) -> CounterOut:
    units, cents = usage.get(take.key, (0, 0))
    return CounterOut(
        counter=take.key,
        cap_units=take.cap_n,
        cap_cost=None if take.cap_cents is None else take.cap_cents / 100,
        used_units=units,
        used_cost=cents / 100,
        room=MemoryCounters(n={take.key: units}, cents={take.key: cents}).room(take),
    )


def _preview(decision: engine.Decision) -> AwardPreview:
    return AwardPreview(
        kind=decision.kind,
        points=decision.points,
        gift=GiftRef(decision.gift_id, decision.gift_name or "") if decision.gift_id else None,
        offer=OfferTerms(**decision.offer) if decision.offer else None,
        message=decision.message,
        expires_at=decision.expires_at,
        cost=float(decision.cost),
        variant=decision.variant,
    )


def _jsonable(result: tuple[Any, str | None]) -> tuple[Any, str | None]:
    value, error = result
    return _plain(value), error


def _plain(value: Any) -> Any:
    """A clause's value as JSON shows it: numbers, strings, booleans, lists, mappings."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
