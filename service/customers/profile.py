"""How one event changes a customer profile, as plain data (no I/O)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.events.schemas import EventIn


def money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class ProfileDelta:
    customer_id: str
    occurred_at: dt.datetime
    purchases: int = 0
    returns: int = 0
    spend: Decimal = Decimal(0)
    purchase_at: dt.datetime | None = None
    category_spend: dict[str, float] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def delta_for(event: EventIn, attributes: dict[str, Any]) -> ProfileDelta:
    """Purchases add spend by category; returns take refunded spend away; interactions count by name."""
    categories: dict[str, Decimal] = defaultdict(Decimal)
    sign = -1 if event.type == "return" else 1
    if event.order is not None:
        for item in event.order.items:
            if item.category:
                categories[item.category] += sign * money(item.unit_price) * Decimal(repr(item.quantity))
    spend = money(event.order.total) * sign if event.order is not None and event.type != "interaction" else Decimal(0)
    return ProfileDelta(
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        purchases=1 if event.type == "purchase" else 0,
        returns=1 if event.type == "return" else 0,
        spend=spend,
        purchase_at=event.occurred_at if event.type == "purchase" else None,
        category_spend={k: float(v) for k, v in categories.items()},
        interactions={event.name: 1} if event.type == "interaction" and event.name else {},
        attributes=attributes,
    )
