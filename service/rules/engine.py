"""The pure rule core: a rule set, an event and a customer in; decisions out.

No I/O and no clock: everything time-dependent uses the event's ``occurred_at``
and every chance draw is a keyed hash, so the same history always gives the
same decisions. The HTTP layer, ``simulate`` and ``backtest`` all call this.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from time import perf_counter
from typing import Any

from service.lib.logging import get_logger
from service.rules.compiled import ERRORS, TimeLimitExceeded, clock
from service.rules.ruleset import Rule, RuleSet, draw_from, draw_prefix

log = get_logger(__name__)

TIME_LIMIT = 0.1
"""Seconds an event's conditions may take in all. The rule files cannot say anything whose cost has no bound
(``loader.unbounded``), so this is a backstop: conditions not decided by then do not hold, and are logged."""
REPLAY_TIME_LIMIT = 10.0
"""The backstop of a back-test, which answers no till: a pause of the machine (another process, the garbage
collector) must not make a condition fail there, or the same replay would give other figures on a busy machine."""


def _time_is_up(event_id: str, limit: float = TIME_LIMIT) -> None:
    log.warning("rule_time_limit", event_id=event_id, limit_ms=int(limit * 1000))


@dataclass(frozen=True, slots=True)
class Decision:
    """One award a rule gives for one event."""

    campaign: str
    rule_id: str
    kind: str
    points: int | None
    gift_id: str | None
    gift_name: str | None
    offer: dict[str, Any] | None
    message: str | None
    expires_at: dt.datetime | None
    cost: Decimal
    variant: str | None = None
    """The reward variant given, for a rule with ``award: {one_of: ...}``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one rule for one event: the decision, or why there is none."""

    campaign: str
    rule_id: str
    matched: bool
    reason: str
    draw: float | None
    decision: Decision | None


def draw(seed: str, campaign: str, rule_id: str, event_id: str) -> float:
    """A uniform number in [0, 1) fixed by its inputs: the rule's chance draw for this event."""
    return draw_from(draw_prefix(seed, campaign, rule_id), event_id)


def evaluate(
    rule_set: RuleSet, facts: dict[str, Any], *, matched_only: bool = False, time_limit: float = TIME_LIMIT
) -> list[Outcome]:
    """Every rule of every campaign against one event, in a stable order (only those that matched, if asked).

    With ``matched_only`` only the rules the event can match at all
    (``RuleSet.candidates``, by type, channel and interaction name) are
    evaluated; without it every rule is, with its reason, for ``simulate``.
    Either way a clause several rules share is tested once.
    """
    # The clock is set and stopped here, without a context manager or a helper: this runs once per event, a
    # million times in a back-test.
    clock.deadline = perf_counter() + time_limit
    clock.exceeded = False
    try:
        return _evaluate(rule_set, facts, matched_only=matched_only)
    finally:
        clock.deadline = math.inf
        if clock.exceeded:
            _time_is_up(facts["event_id"], time_limit)


def _evaluate(rule_set: RuleSet, facts: dict[str, Any], *, matched_only: bool) -> list[Outcome]:
    occurred_at: dt.datetime = facts["occurred_at"]
    tested: dict[int, bool | Exception] = {}
    if matched_only:
        return [
            _matched(rule_set, rule, facts)
            for rule in _active_candidates(rule_set, (facts["type"], facts["channel"], facts["name"]), occurred_at)
            if _holds(rule, facts, tested) is True
        ]
    outcomes: list[Outcome] = []
    for campaign in rule_set.campaigns:
        if not campaign.is_active(occurred_at):
            outcomes.extend(
                Outcome(campaign.name, rule.id, False, "campaign not active on this date", None, None)
                for rule in campaign.rules
            )
            continue
        for rule in campaign.rules:
            holds = _holds(rule, facts, tested)
            if holds is True:
                outcomes.append(_matched(rule_set, rule, facts))
            else:
                # A field the event does not carry (``attributes.rating`` on an event
                # without a rating) means the condition does not hold.
                if holds is False:
                    reason = "condition is false"
                elif isinstance(holds, TimeLimitExceeded):
                    reason = f"not evaluated: the event's conditions took more than {TIME_LIMIT * 1000:.0f} ms"
                else:
                    reason = f"condition could not be evaluated: {type(holds).__name__}"
                outcomes.append(Outcome(rule.campaign, rule.id, False, reason, None, None))
    return outcomes


def drawn(
    rule_set: RuleSet, event_id: str, key: tuple[str, str, str], occurred_at: dt.datetime
) -> list[tuple[Rule, float | None]]:
    """The rules an event can match whose chance draw it wins, each with its draw (``None`` for a rule that
    has no chance to draw).

    ``key`` is the event's (type, channel, interaction name) and
    ``occurred_at`` its time in the shop's zone, as ``build_facts`` gives
    them. Nothing here depends on the customer: an event that wins no draw
    can be given nothing, whoever sent it and whatever is stored.
    """
    won: list[tuple[Rule, float | None]] = []
    for rule in _active_candidates(rule_set, key, occurred_at):
        value = None
        if rule.chance < 1.0:
            value = rule_set.draw(rule, event_id)
            if value >= rule.chance:
                continue
        won.append((rule, value))
    return won


def awarding(
    rule_set: RuleSet, facts: dict[str, Any], won: list[tuple[Rule, float | None]] | None = None
) -> list[Outcome]:
    """The outcomes that award something: ``evaluate(..., matched_only=True)`` less the rules that lose their
    chance draw or whose offer renders empty, as the event path needs them.

    The draw comes first (``drawn``; ``won`` when the caller drew already).
    It does not depend on the condition, most rules give their surprise to a
    few events in a hundred, and a draw costs less than a condition, so most
    conditions are never tested.
    """
    if won is None:
        won = drawn(rule_set, facts["event_id"], (facts["type"], facts["channel"], facts["name"]), facts["occurred_at"])
    awarded = []
    tested: dict[int, bool | Exception] = {}
    clock.deadline = perf_counter() + TIME_LIMIT
    clock.exceeded = False
    try:
        for rule, value in won:
            if _holds(rule, facts, tested) is not True:
                continue
            decision = decide(rule_set, rule, facts)
            if decision is not None:
                awarded.append(Outcome(rule.campaign, rule.id, True, "awarded", value, decision))
    finally:
        clock.deadline = math.inf
        if clock.exceeded:
            _time_is_up(facts["event_id"])
    return awarded


def _active_candidates(rule_set: RuleSet, key: tuple[str, str, str], occurred_at: dt.datetime) -> Iterator[Rule]:
    """The rules an event with (type, channel, name) = ``key`` can match at all (``RuleSet.candidates``), in
    campaigns active when it occurred."""
    active: dict[str, bool] = {}
    for campaign, rule in rule_set.candidates(key):
        is_active = active.get(campaign.name)
        if is_active is None:
            is_active = active[campaign.name] = campaign.is_active(occurred_at)
        if is_active:
            yield rule


def decisions(rule_set: RuleSet, facts: dict[str, Any]) -> list[Decision]:
    return [o.decision for o in evaluate(rule_set, facts) if o.decision is not None]


def _holds(rule: Rule, facts: dict[str, Any], tested: dict[int, bool | Exception]) -> bool | Exception:
    """Whether the condition holds: its clauses in order, each tested once per event (``tested``).

    ``True``, ``False``, or the error that kept a clause from being evaluated; ``TimeLimitExceeded`` for
    every clause not yet tested once the event's time is up.
    """
    if not rule.clauses:
        if perf_counter() > clock.deadline:
            clock.exceeded = True
            return TimeLimitExceeded()
        try:
            return bool(rule.condition.matches(facts))
        except ERRORS as exc:
            return exc
    for clause_id, test in rule.clauses:
        value = tested.get(clause_id)
        if value is None:
            if perf_counter() > clock.deadline:
                clock.exceeded = True
                value = TimeLimitExceeded()
            else:
                try:
                    value = test(facts)
                except TimeLimitExceeded as exc:  # raised inside a comprehension
                    clock.exceeded = True
                    value = exc
                except ERRORS as exc:
                    value = exc
            tested[clause_id] = value
        if value is not True:
            return value
    return True


def _matched(rule_set: RuleSet, rule: Rule, facts: dict[str, Any]) -> Outcome:
    """The outcome of a rule whose condition holds: the chance draw, then the award."""
    value = None
    if rule.chance < 1.0:
        value = rule_set.draw(rule, facts["event_id"])
        if value >= rule.chance:
            return Outcome(rule.campaign, rule.id, True, f"chance draw {value:.4f} >= {rule.chance}", value, None)
    decision = decide(rule_set, rule, facts)
    if decision is None:
        return Outcome(rule.campaign, rule.id, True, "offer category renders empty for this customer", value, None)
    return Outcome(rule.campaign, rule.id, True, "awarded", value, decision)


def decide(rule_set: RuleSet, rule: Rule, facts: dict[str, Any]) -> Decision | None:
    """The award a rule gives this customer (the variant drawn for them, when it has several; or the award of
    one of a rule's ``variants``), or ``None`` when a templated offer category comes out empty.

    An offer meant for "your favourite category" must never turn into a
    discount on everything for a customer without one.
    """
    if rule.variants:
        rule = rule.variant_order(rule_set.settings.seed, facts["customer_id"])[0]
    settings = rule_set.settings
    occurred_at: dt.datetime = facts["occurred_at"]
    offer = None
    valid_days = rule.valid_days
    if rule.offer is not None:
        category = rule.offer.category.render(facts).strip() if rule.offer.category else None
        if rule.offer.category is not None and not category:
            return None
        description = rule.offer.description.render(facts) if rule.offer.description else None
        valid_days = valid_days or rule.offer.valid_days
        offer = {
            k: v
            for k, v in {
                "percent": None if rule.offer.percent is None else float(rule.offer.percent),
                "amount": None if rule.offer.amount is None else float(rule.offer.amount),
                "category": category or None,
                "description": description or None,
                "valid_days": valid_days or settings.default_valid_days,
            }.items()
            if v is not None
        }
    if rule.points is not None:
        expires_at = None
    else:
        expires_at = (occurred_at + dt.timedelta(days=valid_days or settings.default_valid_days)).astimezone(dt.UTC)
    return Decision(
        campaign=rule.campaign,
        rule_id=rule.id,
        kind=rule.kind,
        points=rule.points,
        gift_id=rule.gift.id if rule.gift else None,
        gift_name=rule.gift.name if rule.gift else None,
        offer=offer,
        message=rule.message.render(facts) if rule.message else None,
        expires_at=expires_at,
        cost=rule.cost,
        variant=rule.variant,
    )
