"""Returns take back what their order earned, once, and never below zero."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import purchase

Client = AsyncTestClient[Litestar]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def a_return(event_id: str, order_id: str, total: float, customer: str = "c-1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "return",
        "customer_id": customer,
        "occurred_at": "2026-03-20T10:00:00Z",
        "order": {"order_id": order_id, "total": total},
    }


async def post(client: Client, keys: dict[str, Any], event: dict[str, Any]) -> Any:
    response = await client.post("/v1/events", json=event, headers=keys["events:write"])
    assert response.status_code in (200, 201), response.text
    return response.json()


async def wallet(client: Client, keys: dict[str, Any], customer: str = "c-1") -> Any:
    return (await client.get(f"/v1/customers/{customer}/points", headers=keys["customers:read"])).json()


async def third_visit(client: Client, keys: dict[str, Any], total: float = 80.0) -> str:
    """Three purchases; the third (order o-e-3) earns 200 points. Returns that order's id."""
    for i in (1, 2, 3):
        await post(client, keys, purchase(f"e-{i}", "c-1", total, occurred_at=f"2026-03-0{i}T10:00:00Z"))
    return "o-e-3"


async def test_a_full_return_takes_back_the_points_its_order_earned(client: Client, keys: dict[str, Any]) -> None:
    order = await third_visit(client, keys)
    assert (await wallet(client, keys))["points_balance"] == 200
    await post(client, keys, a_return("r-1", order, 80.0))
    page = await wallet(client, keys)
    assert page["points_balance"] == 0
    newest = page["entries"][0]
    assert (newest["reason"], newest["delta"], newest["shortfall"]) == ("reverse", -200, 0)
    assert sum(e["delta"] for e in page["entries"]) == page["points_balance"]


async def test_partial_returns_take_back_points_in_proportion_and_add_up(client: Client, keys: dict[str, Any]) -> None:
    order = await third_visit(client, keys)
    await post(client, keys, a_return("r-1", order, 20.0))  # a quarter
    assert (await wallet(client, keys))["points_balance"] == 150
    await post(client, keys, a_return("r-2", order, 40.0))  # three quarters in all
    assert (await wallet(client, keys))["points_balance"] == 50
    await post(client, keys, a_return("r-3", order, 40.0))  # more than paid: everything, no more
    assert (await wallet(client, keys))["points_balance"] == 0


async def test_points_already_spent_are_not_clawed_below_zero_and_the_shortfall_is_recorded(
    client: Client, keys: dict[str, Any]
) -> None:
    order = await third_visit(client, keys)
    spent = await client.post(
        "/v1/customers/c-1/points/redeem",
        json={"points": 150, "order_id": "o-spend", "redeemed_at": "2026-03-05T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert spent.status_code == 200
    await post(client, keys, a_return("r-1", order, 80.0))
    page = await wallet(client, keys)
    assert page["points_balance"] == 0
    reverse = next(e for e in page["entries"] if e["reason"] == "reverse")
    assert (reverse["delta"], reverse["shortfall"]) == (-50, 150)


async def test_a_retried_return_reverses_once(client: Client, keys: dict[str, Any]) -> None:
    order = await third_visit(client, keys)
    event = a_return("r-1", order, 40.0)
    first = await post(client, keys, event)
    again = await post(client, keys, event)
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert (await wallet(client, keys))["points_balance"] == 100


async def test_a_full_return_voids_an_unredeemed_gift_but_not_a_redeemed_one(
    client: Client, keys: dict[str, Any]
) -> None:
    kept = (await post(client, keys, purchase("e-1", "c-1", 150.0)))["awards"][0]["code"]  # the mug
    voided = (await post(client, keys, purchase("e-2", "c-1", 150.0)))["awards"][0]["code"]
    redeemed = await client.post(
        f"/v1/awards/{kept}/redeem",
        json={"order_id": "till-1", "redeemed_at": "2026-03-02T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert redeemed.status_code == 200
    await post(client, keys, a_return("r-1", "o-e-1", 150.0))
    await post(client, keys, a_return("r-2", "o-e-2", 150.0))
    again = await client.post(
        f"/v1/awards/{voided}/redeem",
        json={"order_id": "till-2", "redeemed_at": "2026-03-21T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert again.status_code == 409
    assert again.json()["type"] == "urn:delight:problem:award-not-redeemable"
    replay = await client.post(
        f"/v1/awards/{kept}/redeem",
        json={"order_id": "till-1", "redeemed_at": "2026-03-21T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert replay.json()["award"]["status"] == "redeemed"


async def test_a_partial_return_keeps_the_gift(client: Client, keys: dict[str, Any]) -> None:
    code = (await post(client, keys, purchase("e-1", "c-1", 150.0)))["awards"][0]["code"]
    await post(client, keys, a_return("r-1", "o-e-1", 50.0))
    response = await client.post(
        f"/v1/awards/{code}/redeem",
        json={"order_id": "till-1", "redeemed_at": "2026-03-21T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert response.status_code == 200


async def test_a_return_of_an_unknown_order_is_stored_and_changes_nothing(client: Client, keys: dict[str, Any]) -> None:
    await third_visit(client, keys)
    answer = await post(client, keys, a_return("r-1", "never-seen", 500.0))
    assert answer == {"event_id": "r-1", "duplicate": False, "awards": []}
    assert (await wallet(client, keys))["points_balance"] == 200


STATUSES = text(
    """
    SELECT e.order_id, a.kind, a.status FROM awards a JOIN events e ON e.event_id = a.event_id
    WHERE e.customer_id = :customer ORDER BY e.order_id, a.kind
    """
)


async def outcome(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, customer: str, events: list[dict[str, Any]]
) -> Any:
    """Post ``events`` in the order given; the customer's spend, points, and each award's order and status after."""
    for event in events:
        await post(client, keys, event)
    profile = (await client.get(f"/v1/customers/{customer}", headers=keys["customers:read"])).json()
    async with engine.connect() as conn:
        awards = [
            (r.order_id.rsplit("-", 1)[1], r.kind, r.status)
            for r in await conn.execute(STATUSES, {"customer": customer})
        ]
    return profile["lifetime_spend"], profile["points_balance"], profile["return_count"], awards


async def test_the_outcome_of_a_purchase_and_its_return_does_not_depend_on_which_arrives_first(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    def history(customer: str) -> list[dict[str, Any]]:
        return [  # the third purchase earns 200 points and a mug; its order is returned in full
            purchase(f"{customer}-{i}", customer, 150.0, occurred_at=f"2026-03-0{i}T10:00:00Z") for i in (1, 2, 3)
        ]

    in_order = history("c-in-order")
    ahead = history("c-return-first")
    first = await outcome(
        client, keys, engine, "c-in-order", [*in_order, a_return("r-in-order", "o-c-in-order-3", 150.0, "c-in-order")]
    )
    second = await outcome(
        client,
        keys,
        engine,
        "c-return-first",
        [*ahead[:2], a_return("r-return-first", "o-c-return-first-3", 150.0, "c-return-first"), ahead[2]],
    )
    assert first == second
    assert first == (
        300.0,
        0,
        1,
        [("1", "gift", "issued"), ("2", "gift", "issued"), ("3", "gift", "reversed"), ("3", "points", "reversed")],
    )


async def test_a_purchase_whose_full_return_came_first_answers_with_its_awards_reversed(
    client: Client, keys: dict[str, Any]
) -> None:
    await post(client, keys, a_return("r-1", "o-e-1", 150.0))
    answer = await post(client, keys, purchase("e-1", "c-1", 150.0))
    assert [(a["kind"], a["status"]) for a in answer["awards"]] == [("gift", "reversed")]
    code = answer["awards"][0]["code"]
    response = await client.post(
        f"/v1/awards/{code}/redeem",
        json={"order_id": "till-1", "redeemed_at": "2026-03-21T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert response.status_code == 409


async def test_a_partial_return_that_came_first_takes_back_its_share_when_the_purchase_arrives(
    client: Client, keys: dict[str, Any]
) -> None:
    await post(client, keys, a_return("r-1", "o-e-3", 20.0))  # a quarter of the order, before it is seen
    order = await third_visit(client, keys)
    assert order == "o-e-3"
    assert (await wallet(client, keys))["points_balance"] == 150
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["lifetime_spend"] == 220.0


async def test_purchases_and_their_full_returns_posted_at_once_always_net_to_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    customers = [f"race-{n}" for n in range(16)]
    events = [e for c in customers for e in (purchase(f"{c}-p", c, 150.0), a_return(f"{c}-r", f"o-{c}-p", 150.0, c))]
    await asyncio.gather(*(post(client, keys, e) for e in events))
    for customer in customers:
        spend, points, returns, awards = await outcome(client, keys, engine, customer, [])
        assert (spend, points, returns, awards) == (0.0, 0, 1, [("p", "gift", "reversed")]), customer


async def test_the_migration_counts_existing_profiles_as_the_event_path_now_does(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    """Migration 0017 recounts spend and refunds ahead from the stored events: the same figures as the path."""
    spec = importlib.util.spec_from_file_location("m0017", MIGRATIONS / "0017_refunds_ahead.py")
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    await post(client, keys, a_return("r-0", "o-unseen", 30.0))
    await post(client, keys, a_return("r-1", "o-e-2", 100.0))
    await third_visit(client, keys)
    await post(client, keys, a_return("r-2", "o-e-1", 20.0))
    await post(client, keys, purchase("e-4", "c-2", 40.0))
    profiles = text("SELECT customer_id, lifetime_spend, refunds_ahead FROM customers ORDER BY customer_id")
    async with engine.begin() as conn:
        counted = (await conn.execute(profiles)).all()
        await conn.execute(text("UPDATE customers SET lifetime_spend = 0, refunds_ahead = NULL"))
        await conn.execute(text(migration.RECOUNT))
        recounted = (await conn.execute(profiles)).all()
    assert [tuple(r) for r in counted] == [("c-1", 60 + 0 + 80, {"o-unseen": 30, "o-e-2": 20}), ("c-2", 40, None)]
    assert recounted[0] == counted[0]
    assert tuple(recounted[1]) == ("c-2", 0, None)  # no return: the recount leaves it as it is
