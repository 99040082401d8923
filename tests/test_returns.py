"""Returns take back what their order earned, once, and never below zero."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import purchase

Client = AsyncTestClient[Litestar]


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
