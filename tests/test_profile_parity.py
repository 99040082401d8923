"""The pure ``apply_delta`` (what ``simulate`` and ``backtest`` use) computes exactly what the SQL upsert stores.

Seeded random histories are posted through ``POST /v1/events`` and, alongside,
folded with ``delta_for`` + ``apply_delta`` (and ``count_into_order`` for what
a return takes off its order) from ``empty_profile``; after every event the
stored profile (``customers.repository.get_profile``) and the pure one must
agree field by field.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.customers.profile import (
    OrderTotals,
    apply_delta,
    count_into_order,
    delta_for,
    empty_profile,
    refunds_by_order,
)
from service.customers.repository import get_profile
from service.events.schemas import EventIn

Client = AsyncTestClient[Litestar]

CATEGORIES = ("art", "books", "candles")
INTERACTIONS = ("review_posted", "visit", "share")
SEQUENCES = 20
EVENTS_PER_SEQUENCE = 15

COMPARED = (
    "purchase_count",
    "return_count",
    "lifetime_spend",
    "first_purchase_at",
    "last_purchase_at",
    "last_event_at",
    "favourite_category",
    "interaction_counts",
    "category_spend",
    "attributes",
    "refunds_ahead",
)


def random_event(rng: random.Random, customer_id: str, n: int) -> dict[str, Any]:
    """A purchase, return or interaction at one of few instants (so times tie and arrive out of order)."""
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    instant = base + dt.timedelta(days=rng.randrange(10), hours=rng.choice([9, 12, 23]))
    offset = dt.timezone(dt.timedelta(hours=rng.choice([0, 1, -3, 5.5])))
    event: dict[str, Any] = {
        "event_id": f"{customer_id}-e{n}",
        "customer_id": customer_id,
        "occurred_at": instant.astimezone(offset).isoformat(),
        "channel": "pos",
    }
    kind = rng.choices(["purchase", "return", "interaction"], weights=[6, 2, 3])[0]
    event["type"] = kind
    if kind == "interaction":
        event["name"] = rng.choice(INTERACTIONS)
        event["attributes"] = {"rating": rng.randrange(1, 6)}
    else:
        items = [
            {
                "sku": f"SKU-{rng.randrange(100)}",
                "category": rng.choice(CATEGORIES),
                "quantity": rng.choice([1, 1, 2, 3, 0.5]),
                "unit_price": rng.choice([5.0, 10.0, 12.5, 19.99, 40.0]),
            }
            for _ in range(rng.randrange(1, 4))
        ]
        total = float(sum(Decimal(repr(i["unit_price"])) * Decimal(repr(i["quantity"])) for i in items))
        if kind == "return" and rng.random() < 0.3:
            total = round(total + rng.choice([15.0, 80.0]), 2)  # a refund larger than the items: spend hits 0
        # few orders, so that returns meet their purchases, before and after them
        order_id = f"o-{customer_id}-{rng.randrange(4)}"
        event["order"] = {"order_id": order_id, "total": total, "currency": "EUR", "items": items}
    if rng.random() < 0.5:
        attributes: dict[str, Any] = {}
        if rng.random() < 0.6:
            attributes["first_name"] = rng.choice(["Ana", "Luis", "Marta"])
        if rng.random() < 0.5:
            attributes["language"] = rng.choice(["es", "en", "ca"])
        if rng.random() < 0.6:
            channels = rng.sample(["email", "sms", "push"], rng.randrange(1, 3))
            attributes["consent"] = {c: rng.random() < 0.5 for c in channels}
        event["customer"] = attributes
    return event


def pure_step(profile: dict[str, Any], orders: OrderTotals, raw: dict[str, Any]) -> dict[str, Any]:
    """One event folded into the profile the way ``record_event`` counts it, without SQL."""
    event = msgspec.json.decode(msgspec.json.encode(raw), type=EventIn)
    event = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(dt.UTC))
    attributes = msgspec.to_builtins(event.customer) if event.customer else {}
    return count_into_order(apply_delta(profile, delta_for(event, attributes)), orders, event)


def normalised(profile: dict[str, Any]) -> dict[str, Any]:
    """The compared fields, with numbers as exact decimals (JSON gives 10.0 where Python keeps 10)."""
    shown = {k: profile[k] for k in COMPARED}
    shown["lifetime_spend"] = Decimal(profile["lifetime_spend"])
    shown["refunds_ahead"] = refunds_by_order(profile["refunds_ahead"])
    for name in ("category_spend", "interaction_counts"):
        shown[name] = {k: Decimal(str(v)) for k, v in (profile[name] or {}).items()}
    return shown


async def post_and_compare(
    client: Client,
    keys: dict[str, Any],
    sessionmaker: async_sessionmaker[AsyncSession],
    events: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Post each event and fold it purely; returns the pure profiles, asserting after each event."""
    customer_id = events[0]["customer_id"]
    pure = empty_profile(customer_id)
    orders: OrderTotals = {}
    seen = []
    for n, raw in enumerate(events):
        response = await client.post("/v1/events", json=raw, headers=keys["events:write"])
        assert response.status_code == 201, response.text
        pure = pure_step(pure, orders, raw)
        async with sessionmaker() as session:
            stored = await get_profile(session, customer_id)
        assert stored is not None
        expected, actual = normalised(pure), normalised(stored)
        assert actual == expected, f"{customer_id} after event {n} ({raw}):\nSQL  {actual}\npure {expected}"
        seen.append(pure)
    return seen


async def test_apply_delta_matches_the_sql_upsert_after_every_event_of_20_random_histories(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    profiles = []
    for sequence in range(SEQUENCES):
        rng = random.Random(1000 + sequence)
        customer_id = f"parity-{sequence}"
        events = [random_event(rng, customer_id, n) for n in range(EVENTS_PER_SEQUENCE)]
        profiles += await post_and_compare(client, keys, sessionmaker, events)

    # the histories really reached the cases the upsert treats specially
    assert len(profiles) == SEQUENCES * EVENTS_PER_SEQUENCE
    assert any(p["return_count"] and p["lifetime_spend"] == 0 for p in profiles)  # spend floored at 0
    assert any(any(p["refunds_ahead"].values()) for p in profiles if p["refunds_ahead"])  # a return came first
    assert any(0 in p["refunds_ahead"].values() for p in profiles if p["refunds_ahead"])  # ... and its purchase
    assert any(Decimal(str(v)) < 0 for p in profiles for v in p["category_spend"].values())
    assert {p["favourite_category"] for p in profiles} >= {None, *CATEGORIES}
    assert any(len(p["attributes"].get("consent", {})) >= 2 for p in profiles)  # consent merged across events
    assert any(p["first_purchase_at"] != p["last_purchase_at"] for p in profiles if p["first_purchase_at"])


async def test_a_late_event_fills_missing_attributes_but_never_overwrites_newer_ones_in_both(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    def event(n: int, at: str, customer: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_id": f"late-{n}",
            "type": "interaction",
            "name": "visit",
            "customer_id": "late",
            "occurred_at": at,
            "customer": customer,
        }

    events = [
        event(1, "2026-03-10T10:00:00Z", {"first_name": "Ana", "consent": {"email": True}}),
        event(2, "2026-03-01T10:00:00+01:00", {"first_name": "Old", "language": "es", "consent": {"email": False}}),
        event(3, "2026-03-01T10:00:00Z", {"consent": {"sms": True}}),
        event(4, "2026-03-10T11:00:00+01:00", {"first_name": "Same instant", "consent": {"sms": False}}),
    ]
    [*_, last] = await post_and_compare(client, keys, sessionmaker, events)
    assert last["attributes"] == {
        "first_name": "Same instant",  # an event at the same instant counts as the newer one
        "language": "es",
        "consent": {"email": True, "sms": False},
    }


async def test_a_return_takes_off_at_most_what_its_own_order_paid_in_either(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    def event(n: int, kind: str, order: str, total: float) -> dict[str, Any]:
        return {
            "event_id": f"floor-{n}",
            "type": kind,
            "customer_id": "floor",
            "occurred_at": f"2026-03-0{n + 1}T10:00:00Z",
            "order": {
                "order_id": order,
                "total": total,
                "items": [{"sku": "S", "category": "art", "unit_price": total}],
            },
        }

    events = [
        event(0, "return", "o-early", 30.0),  # before its purchase: nothing to take off yet
        event(1, "purchase", "o-1", 20.0),
        event(2, "return", "o-1", 50.0),  # more than o-1 paid: o-1 counts 0, o-early's refund is not touched
        event(3, "purchase", "o-2", 40.0),
        event(4, "purchase", "o-early", 7.5),  # nets off 7.50 of the 30 refunded ahead
        event(5, "purchase", "o-early", 30.0),  # the rest: o-early counts 37.50 - 30
    ]
    profiles = await post_and_compare(client, keys, sessionmaker, events)
    assert [p["lifetime_spend"] for p in profiles] == [0, 20, 0, 40, 40, Decimal("47.50")]
    assert [p["refunds_ahead"] for p in profiles] == [
        {"o-early": 30},
        {"o-early": 30},
        {"o-early": 30, "o-1": 30},  # o-1 refunded 30 more than paid, should a second payment come
        {"o-early": 30, "o-1": 30},
        {"o-early": Decimal("22.50"), "o-1": 30},
        {"o-early": 0, "o-1": 30},
    ]
    assert [p["favourite_category"] for p in profiles][:3] == [None, None, None]  # art stays at or below 0


async def test_favourite_category_ties_go_to_the_same_name_in_both(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    def bought(n: int, category: str) -> dict[str, Any]:
        return {
            "event_id": f"tie-{n}",
            "type": "purchase",
            "customer_id": "tie",
            "occurred_at": "2026-03-01T10:00:00Z",
            "order": {
                "order_id": f"o-{n}",
                "total": 10.0,
                "items": [{"sku": "S", "category": category, "unit_price": 10.0}],
            },
        }

    # mixed case: the database's collation must not decide a tie differently from Python
    profiles = await post_and_compare(
        client, keys, sessionmaker, [bought(0, "apple"), bought(1, "Zebra"), bought(2, "mango")]
    )
    assert profiles[-1]["favourite_category"] == "Zebra"  # by code point, as delight_jsonb_top_key does in C collation
