"""How one event changes a customer profile, as plain data (no I/O)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.events.schemas import EventIn

MAX_PROFILE_KEYS = 100
"""Categories, and interaction names, a profile keeps: those it has, then new ones in code point order while it
holds fewer (``delight_jsonb_add``, migration 0016), so that one customer's profile cannot grow without end."""


def money(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class ProfileDelta:
    customer_id: str
    occurred_at: dt.datetime
    order_id: str | None = None
    purchases: int = 0
    returns: int = 0
    spend: Decimal = Decimal(0)
    purchase_at: dt.datetime | None = None
    category_spend: dict[str, float] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


def delta_for(event: EventIn, attributes: dict[str, Any]) -> ProfileDelta:
    """Purchases add spend, by category too; returns take refunded spend away by category; interactions count
    by name.

    A return's effect on lifetime spend depends on what its order was paid, so it is not in the delta: it is
    counted once the order is read, after the profile is locked (``refund_effect``).
    """
    categories: dict[str, Decimal] = defaultdict(Decimal)
    sign = -1 if event.type == "return" else 1
    if event.order is not None:
        for item in event.order.items:
            if item.category:
                categories[item.category] += sign * money(item.unit_price) * Decimal(repr(item.quantity))
    spend = money(event.order.total) if event.order is not None and event.type == "purchase" else Decimal(0)
    return ProfileDelta(
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        order_id=event.order.order_id if event.order is not None else None,
        purchases=1 if event.type == "purchase" else 0,
        returns=1 if event.type == "return" else 0,
        spend=spend,
        purchase_at=event.occurred_at if event.type == "purchase" else None,
        category_spend={k: float(categories[k]) for k in sorted(categories)[:MAX_PROFILE_KEYS]},
        interactions={event.name: 1} if event.type == "interaction" and event.name else {},
        attributes=attributes,
    )


def empty_profile(customer_id: str) -> dict[str, Any]:
    """A customer before their first event, in the shape the profile upsert returns."""
    return {
        "customer_id": customer_id,
        "purchase_count": 0,
        "return_count": 0,
        "lifetime_spend": Decimal(0),
        "first_purchase_at": None,
        "last_purchase_at": None,
        "last_event_at": None,
        "category_spend": {},
        "interaction_counts": {},
        "points_balance": 0,
        "attributes": {},
        "award_log": [],
        "refunds_ahead": None,
        "favourite_category": None,
    }


def apply_delta(profile: dict[str, Any], delta: ProfileDelta) -> dict[str, Any]:
    """The profile after one event, exactly as the SQL upsert computes it (``customers/repository.py``).

    Used where nothing may be written: ``simulate`` and ``backtest``.
    """
    after = dict(profile)
    after["purchase_count"] = profile["purchase_count"] + delta.purchases
    after["return_count"] = profile["return_count"] + delta.returns
    spend = delta.spend
    ahead = profile.get("refunds_ahead")
    if delta.order_id is not None and ahead and delta.order_id in ahead:  # a return came first: net it off
        refunded_beyond = Decimal(str(ahead[delta.order_id]))
        spend = max(delta.spend - refunded_beyond, Decimal(0))
        after["refunds_ahead"] = {**ahead, delta.order_id: max(refunded_beyond - delta.spend, Decimal(0))}
    after["lifetime_spend"] = Decimal(profile["lifetime_spend"]) + spend
    after["first_purchase_at"] = _least(profile["first_purchase_at"], delta.purchase_at)
    after["last_purchase_at"] = _greatest(profile["last_purchase_at"], delta.purchase_at)
    newer = profile["last_event_at"] is None or delta.occurred_at >= profile["last_event_at"]
    after["last_event_at"] = _greatest(profile["last_event_at"], delta.occurred_at)
    after["category_spend"] = add_counts(profile.get("category_spend") or {}, delta.category_spend)
    after["interaction_counts"] = add_counts(profile.get("interaction_counts") or {}, delta.interactions)
    after["attributes"] = merge_attributes(profile.get("attributes") or {}, delta.attributes, newer=newer)
    after["favourite_category"] = favourite(after["category_spend"])
    return after


def refund_effect(
    paid: Decimal, refunded: Decimal, amount: Decimal, order_id: str, refunds_ahead: dict[str, Any] | None
) -> tuple[Decimal, dict[str, Any] | None]:
    """How a return of ``amount`` changes lifetime spend, and the profile's ``refunds_ahead`` after it.

    ``paid`` and ``refunded`` are the order's totals so far, this return
    included. An order counts what was paid for it less what was refunded,
    never below zero, so the result does not depend on the order in which its
    purchase and returns arrive: a refund beyond what was paid (all of it, for
    an order not yet seen) is kept in ``refunds_ahead`` for the purchase to net
    off when it comes (``delight``'s profile upsert; ``apply_delta``). A
    profile keeps at most ``MAX_PROFILE_KEYS`` such orders. ``amount`` 0
    recounts the order after a purchase without changing the spend.
    """
    change = max(paid - refunded, Decimal(0)) - max(paid - refunded + amount, Decimal(0))
    beyond = max(refunded - paid, Decimal(0))
    ahead = refunds_by_order(refunds_ahead) or {}
    if order_id in ahead or (beyond > 0 and len(ahead) < MAX_PROFILE_KEYS):
        ahead[order_id] = beyond
    return change, ahead or None


OrderTotals = dict[str, float | tuple[float, ...]]
"""What each order was paid, and (under a key of its own) refunded, as sent: keyed by a string and held as
floats, nothing the garbage collector tracks, so that a back-test of a million events does not slow down as it
collects them (a tuple per purchase made it a third slower)."""


def _totals(orders: OrderTotals, key: str) -> tuple[float, ...]:
    held = orders.get(key)
    return () if held is None else held if isinstance(held, tuple) else (held,)


def count_into_order(profile: dict[str, Any], orders: OrderTotals, event: EventIn) -> dict[str, Any]:
    """The profile once a purchase or return is counted into its order's totals (``orders``), as the return's
    statement counts it after the event's own rules have judged it: for what replays events without a database.
    A purchase only notes its total; a return sums its order's exactly."""
    if event.order is None or event.type == "interaction":
        return profile
    paid_key = f"{event.customer_id}\x1f{event.order.order_id}"
    if event.type == "purchase":
        held = orders.get(paid_key)
        orders[paid_key] = event.order.total if held is None else (*_totals(orders, paid_key), event.order.total)
        return profile
    refunded = (*_totals(orders, "\x1e" + paid_key), event.order.total)
    orders["\x1e" + paid_key] = refunded
    change, ahead = refund_effect(
        sum((money(t) for t in _totals(orders, paid_key)), Decimal(0)),
        sum((money(t) for t in refunded), Decimal(0)),
        money(event.order.total),
        event.order.order_id,
        profile.get("refunds_ahead"),
    )
    return {**profile, "lifetime_spend": Decimal(profile["lifetime_spend"]) + change, "refunds_ahead": ahead}


def refunds_by_order(refunds_ahead: dict[str, Any] | None) -> dict[str, Decimal] | None:
    """``refunds_ahead`` as stored (JSON numbers) in exact decimals."""
    return None if refunds_ahead is None else {k: Decimal(str(v)) for k, v in refunds_ahead.items()}


def merge_attributes(old: dict[str, Any], new: dict[str, Any], *, newer: bool) -> dict[str, Any]:
    """The newer event wins key by key; consent merges per channel (``delight_merge_attributes``)."""
    first, second = (old, new) if newer else (new, old)
    merged = {**first, **second}
    if "consent" in old or "consent" in new:
        merged["consent"] = {**(first.get("consent") or {}), **(second.get("consent") or {})}
    return merged


def favourite(category_spend: dict[str, Any]) -> str | None:
    """The category with the highest positive spend; ties to the first name in code point order, as
    ``delight_jsonb_top_key`` orders them in the C collation. A null spend counts as none."""
    best, most = None, Decimal(0)
    for category, value in category_spend.items():
        if value is None:
            continue
        spend = Decimal(str(value))
        if spend > most or (spend == most and best is not None and category < best):
            best, most = category, spend
    return best


def add_counts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` plus ``extra`` key by key, as ``delight_jsonb_add`` adds them (at most ``MAX_PROFILE_KEYS``)."""
    total = {k: Decimal(str(v)) for k, v in base.items()}
    for k in sorted(extra):  # new keys in code point order, as the C collation orders them, while there is room
        if k in total or len(total) < MAX_PROFILE_KEYS:
            total[k] = total.get(k, Decimal(0)) + Decimal(str(extra[k]))
    return {k: int(v) if v == v.to_integral_value() else v for k, v in total.items()}


def _least(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else max(a, b)
