"""A loaded, type-checked rule set: immutable, versioned by the hash of its files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from service.rules.spec import SettingsSpec
from service.rules.template import Template


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

    @property
    def kind(self) -> str:
        return "points" if self.points is not None else "gift" if self.gift is not None else "offer"


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    description: str | None
    starts: dt.date | None
    until: dt.date | None
    rules: tuple[Rule, ...]
    source: str

    def is_active(self, at: dt.datetime) -> bool:
        """Whether the campaign runs on the day of ``at``, a time already in the shop's time zone."""
        day = at.date()
        return (self.starts is None or day >= self.starts) and (self.until is None or day <= self.until)


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    loaded_at: dt.datetime
    campaigns: tuple[Campaign, ...]
    gifts: dict[str, Gift]
    settings: SettingsSpec
    files: dict[str, str] = field(repr=False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.campaigns)
