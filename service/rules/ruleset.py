"""A loaded, type-checked rule set: immutable, versioned by the hash of its files."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from service.rules.index import Requirements, admits
from service.rules.spec import SettingsSpec
from service.rules.template import Template

_TWO_64 = float(2**64)


def draw_prefix(seed: str, campaign: str, rule_id: str) -> Any:
    """The SHA-256 state of a chance draw's fixed part; ``draw_from`` adds the event id."""
    return hashlib.sha256(f"{seed}\x1f{campaign}\x1f{rule_id}\x1f".encode())


def draw_from(prefix: Any, event_id: str) -> float:
    """A uniform number in [0, 1): the draw ``prefix`` gives for ``event_id`` (``prefix`` is left as it was)."""
    digest = prefix.copy()
    digest.update(event_id.encode())
    return int.from_bytes(digest.digest()[:8], "big") / _TWO_64


_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> int:
    """``"90d"`` → seconds; the format is checked when files load (``spec.DURATION_PATTERN``)."""
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


@dataclass(frozen=True, slots=True)
class Gift:
    id: str
    name: str
    unit_cost: Decimal
    stock: int | None


@dataclass(frozen=True, slots=True)
class Offer:
    percent: Decimal | None
    amount: Decimal | None
    category: Template | None
    description: Template | None
    valid_days: int | None


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` surprises within any span of ``seconds`` (event time)."""

    count: int
    seconds: int


CANDIDATE_KEYS = 4096  # distinct (type, channel, name) whose candidate rules a rule set keeps

DEFAULT_INTERACTION_CAP = Limit(5, 86400)  # awards per customer from interactions, per day


@dataclass(frozen=True, slots=True)
class Budget:
    awards: int | None
    cost: Decimal | None
    daily_awards: int | None
    daily_cost: Decimal | None

    @property
    def is_capped(self) -> bool:
        return any(v is not None for v in (self.awards, self.cost, self.daily_awards, self.daily_cost))


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    campaign: str
    when: str
    condition: Any  # a compiled rule_engine.Rule
    chance: float
    points: int | None
    gift: Gift | None
    offer: Offer | None
    message: Template | None
    valid_days: int | None
    source: str
    line: int
    limit: Limit | None = None
    priority: int = 0
    cost: Decimal = Decimal(0)
    """What one award of this rule costs the shop, for budgets and reports."""
    requires: Requirements = field(default_factory=dict)
    """Event fields the condition pins (``index.py``): ``{"type": {"purchase"}}``; empty when it pins none."""
    clauses: tuple[tuple[int, Callable[[dict[str, Any]], bool]], ...] = ()
    """The condition compiled to Python as shared top-level ``and`` clauses (``compiled.compile_clauses``);
    ``condition.matches`` when empty."""
    variants: tuple[Rule, ...] = ()
    """A rule with ``award: {one_of: [...]}``: the rule once per variant, each with its own award, ``variant``
    and ``weight`` (the rule's own award fields are its first variant's); empty for a rule with one award."""
    variant: str | None = None
    """The variant's name, on each of ``variants``."""
    weight: float = 1.0
    """The variant's relative chance in the customer's draw (``variant_order``)."""

    @property
    def kind(self) -> str:
        if self.variants:
            return "one_of"
        return "points" if self.points is not None else "gift" if self.gift is not None else "offer"

    def variant_order(self, seed: str, customer_id: str) -> tuple[Rule, ...]:
        """The variants in the order a customer is offered them: the one drawn for this customer and rule (by
        weight, the same at every event), then those after it in the file's order, round to the start; what a
        customer gets when the one before is out of stock. ``(self,)`` for a rule with one award."""
        if not self.variants:
            return (self,)
        point = draw_from(draw_prefix(seed, self.campaign, f"{self.id}\x1fvariant"), customer_id)
        total = sum(v.weight for v in self.variants)
        reached = 0.0
        drawn = len(self.variants) - 1
        for i, variant in enumerate(self.variants):
            reached += variant.weight / total
            if point < reached:
                drawn = i
                break
        return self.variants[drawn:] + self.variants[:drawn]


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    description: str | None
    starts: dt.date | None
    until: dt.date | None
    rules: tuple[Rule, ...]
    source: str
    holdout: float = 0.0
    budget: Budget | None = None
    limit: Limit | None = None

    def is_active(self, at: dt.datetime) -> bool:
        """Whether the campaign runs on the day of ``at``, a time already in the shop's time zone."""
        day = at.date()
        return (self.starts is None or day >= self.starts) and (self.until is None or day <= self.until)

    def status_on(self, day: dt.date) -> Literal["running", "scheduled", "ended"]:
        """Where ``day`` (in the shop's time zone) falls in the campaign's schedule."""
        if self.starts is not None and day < self.starts:
            return "scheduled"
        if self.until is not None and day > self.until:
            return "ended"
        return "running"


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    loaded_at: dt.datetime
    campaigns: tuple[Campaign, ...]
    gifts: dict[str, Gift]
    settings: SettingsSpec
    files: dict[str, str] = field(repr=False)
    by_name: dict[str, Campaign] = field(init=False, repr=False)
    rules_by_key: dict[tuple[str, str], Rule] = field(init=False, repr=False)
    _candidates: dict[tuple[str, str, str], tuple[tuple[Campaign, Rule], ...]] = field(
        init=False, repr=False, compare=False
    )
    _draws: dict[tuple[str, str], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.campaigns})
        object.__setattr__(self, "rules_by_key", {(c.name, r.id): r for c in self.campaigns for r in c.rules})
        object.__setattr__(self, "_candidates", {})
        object.__setattr__(self, "_draws", {})

    def draw(self, rule: Rule, event_id: str) -> float:
        """``engine.draw`` for this rule set's seed: the SHA-256 of the seed, campaign and rule id is hashed
        once per rule and only the event id is added per event."""
        prefix = self._draws.get((rule.campaign, rule.id))
        if prefix is None:
            prefix = self._draws[(rule.campaign, rule.id)] = draw_prefix(self.settings.seed, rule.campaign, rule.id)
        return draw_from(prefix, event_id)

    def candidates(self, key: tuple[str, str, str]) -> tuple[tuple[Campaign, Rule], ...]:
        """The rules an event with (type, channel, name) = ``key`` can match, in rule-set order.

        Worked out once per key and kept; channel and interaction names come
        from clients, so only the first ``CANDIDATE_KEYS`` keys are kept.
        """
        found = self._candidates.get(key)
        if found is None:
            found = tuple((c, r) for c in self.campaigns for r in c.rules if admits(r.requires, key))
            if len(self._candidates) < CANDIDATE_KEYS:
                self._candidates[key] = found
        return found

    @property
    def fatigue(self) -> Limit | None:
        fatigue = self.settings.fatigue
        return None if fatigue is None else Limit(fatigue.max, duration_seconds(fatigue.every))

    @property
    def interaction_cap(self) -> Limit:
        cap = self.settings.interaction_awards
        return DEFAULT_INTERACTION_CAP if cap is None else Limit(cap.max, duration_seconds(cap.every))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.campaigns)
