"""Redeeming codes and spending points at the till, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.awards.codes import ALPHABET, new_code
from tests.conftest import purchase

Client = AsyncTestClient[Litestar]
WON_AT = "2026-03-01T10:00:00Z"  # the test pack's awards last 45 days: until 2026-04-15 10:00
BEFORE_EXPIRY = "2026-03-20T12:00:00Z"
AFTER_EXPIRY = "2026-04-15T10:00:01Z"


async def win_mug(client: Client, keys: dict[str, Any], event_id: str = "e-1", at: str = WON_AT) -> str:
    response = await client.post(
        "/v1/events", json=purchase(event_id, "c-1", 150.0, occurred_at=at), headers=keys["events:write"]
    )
    [award] = [a for a in response.json()["awards"] if a["kind"] == "gift"]
    return str(award["code"])


async def redeem(client: Client, keys: dict[str, Any], code: str, order: str, at: str = BEFORE_EXPIRY) -> Any:
    body = {"order_id": order, "redeemed_at": at}
    return await client.post(f"/v1/awards/{code}/redeem", json=body, headers=keys["awards:redeem"])


async def test_a_code_redeems_once_per_order_and_shows_as_redeemed(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    code = await win_mug(client, keys)
    first = await redeem(client, keys, code, "till-order-1")
    again = await redeem(client, keys, code, "till-order-1")
    assert first.status_code == 200
    assert first.json()["replay"] is False
    assert first.json()["award"]["status"] == "redeemed"
    assert again.status_code == 200
    assert again.json()["replay"] is True
    assert again.json()["redeemed_at"] == first.json()["redeemed_at"]
    async with engine.connect() as connection:
        row = (
            await connection.execute(text("SELECT status, redeemed_order_id FROM awards WHERE code = :c"), {"c": code})
        ).one()
    assert (row.status, row.redeemed_order_id) == ("redeemed", "till-order-1")
    async with engine.connect() as connection:
        active = (
            await connection.execute(
                text("SELECT count(*) FROM awards WHERE status = 'issued' AND code = :c"), {"c": code}
            )
        ).scalar_one()
    assert active == 0  # no longer among the active awards


async def test_another_order_cannot_redeem_a_redeemed_code(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    assert (await redeem(client, keys, code, "order-a")).status_code == 200
    response = await redeem(client, keys, code, "order-b")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:delight:problem:award-already-redeemed"


async def test_two_tills_racing_for_one_code_exactly_one_wins(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    responses = await asyncio.gather(*(redeem(client, keys, code, f"till-{i}") for i in range(12)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 11


async def test_an_expired_code_is_a_409_saying_so(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    response = await redeem(client, keys, code, "order-1", at=AFTER_EXPIRY)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:delight:problem:award-expired"
    assert (await redeem(client, keys, code, "order-1", at="2026-04-15T10:14:59Z")).status_code == 409
    assert (await redeem(client, keys, code, "order-1", at="2026-04-15T10:14:00+01:00")).status_code == 200


async def test_unknown_and_mistyped_codes_are_404(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    swapped = code[:-1] + next(c for c in ALPHABET if c != code[-1])  # a wrong check character
    for attempt in (new_code(), swapped, "not-a-code"):
        response = await redeem(client, keys, attempt, "order-1")
        assert response.status_code == 404, attempt
        assert response.json()["type"] == "urn:delight:problem:not-found"


async def test_codes_are_read_without_case_dashes_or_spaces(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    typed = code.replace("-", " ").lower()
    response = await redeem(client, keys, typed, "o-1")
    assert response.status_code == 200
    assert response.json()["award"]["code"] == code


async def test_redeeming_needs_the_awards_redeem_scope_and_an_order(client: Client, keys: dict[str, Any]) -> None:
    code = await win_mug(client, keys)
    forbidden = await client.post(f"/v1/awards/{code}/redeem", json={"order_id": "o"}, headers=keys["events:write"])
    assert forbidden.status_code == 403
    missing = await client.post(f"/v1/awards/{code}/redeem", json={}, headers=keys["awards:redeem"])
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "order_id"


async def earn_points(client: Client, keys: dict[str, Any], customer: str = "c-1") -> None:
    for i in range(3):  # the third purchase earns 200 points
        await client.post("/v1/events", json=purchase(f"{customer}-p{i}", customer, 10.0), headers=keys["events:write"])


async def spend(client: Client, keys: dict[str, Any], points: int, order: str, customer: str = "c-1") -> Any:
    return await client.post(
        f"/v1/customers/{customer}/points/redeem",
        json={"points": points, "order_id": order},
        headers=keys["awards:redeem"],
    )


async def test_spending_points_lowers_the_balance_once_per_order(client: Client, keys: dict[str, Any]) -> None:
    await earn_points(client, keys)
    first = await spend(client, keys, 50, "order-1")
    again = await spend(client, keys, 50, "order-1")
    assert first.status_code == 200
    assert first.json()["points_balance"] == 150
    assert again.status_code == 200
    assert again.json() == {**first.json(), "replay": True}
    conflict = await spend(client, keys, 60, "order-1")
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:delight:problem:points-order-conflict"


async def test_a_spend_the_balance_does_not_cover_is_refused(client: Client, keys: dict[str, Any]) -> None:
    await earn_points(client, keys)
    response = await spend(client, keys, 201, "order-1")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:delight:problem:insufficient-points"
    assert (await spend(client, keys, 1, "x", customer="nobody")).status_code == 404


async def test_twenty_concurrent_spends_against_a_balance_covering_five_give_exactly_five(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    await earn_points(client, keys)  # 200 points: five spends of 40
    responses = await asyncio.gather(*(spend(client, keys, 40, f"order-{i}") for i in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [409] * 15
    async with engine.connect() as connection:
        balance, ledger = (
            await connection.execute(
                text(
                    "SELECT c.points_balance,"
                    " (SELECT sum(delta) FROM points_ledger l WHERE l.customer_id = c.customer_id)"
                    " FROM customers c WHERE customer_id = 'c-1'"
                )
            )
        ).one()
    assert balance == ledger == 0


async def test_the_same_order_spent_from_two_tills_at_once_spends_once(client: Client, keys: dict[str, Any]) -> None:
    await earn_points(client, keys)
    responses = await asyncio.gather(*(spend(client, keys, 30, "same-order") for _ in range(8)))
    assert {r.status_code for r in responses} == {200}
    assert sorted(r.json()["replay"] for r in responses) == [False] + [True] * 7
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert profile["points_balance"] == 170


async def test_the_wallet_shows_the_ledger_newest_first_a_page_at_a_time(client: Client, keys: dict[str, Any]) -> None:
    await earn_points(client, keys)
    for i in range(4):
        await spend(client, keys, 10, f"order-{i}")
    profile = (await client.get("/v1/customers/c-1", headers=keys["customers:read"])).json()
    assert [e["reason"] for e in profile["ledger"]] == ["spend"] * 4 + ["earn"]
    assert profile["ledger_next"] is None
    first = (await client.get("/v1/customers/c-1/points?limit=2", headers=keys["customers:read"])).json()
    assert first["points_balance"] == 160
    assert [e["delta"] for e in first["entries"]] == [-10, -10]
    rest = (
        await client.get(f"/v1/customers/c-1/points?limit=10&before={first['next']}", headers=keys["customers:read"])
    ).json()
    assert [e["delta"] for e in rest["entries"]] == [-10, -10, 200]
    assert rest["next"] is None
    assert sum(e["delta"] for e in first["entries"] + rest["entries"]) == first["points_balance"]


# --- how far back (and forward) a till's own redeemed_at may go --------------------------------------------------

BOUNDED = """\
campaign: bounded
rules:
  - id: mug
    when: type == "purchase" and order.total >= 100
    award: {gift: mug}
    valid_days: 1
"""


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_redeemed_at_is_bounded_so_an_expired_award_cannot_be_redeemed_by_sending_an_earlier_time(
    rules_app: Any, keys: dict[str, Any]
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with rules_app(BOUNDED, settings="seed: bounds\noffline_redemptions: 3d\n") as client:
        won = await client.post(
            "/v1/events",
            json=purchase("e-old", "c-1", 150.0, occurred_at=_iso(now - dt.timedelta(days=10))),
            headers=keys["events:write"],
        )
        [expired_code] = [a["code"] for a in won.json()["awards"]]  # issued 10 days ago, valid for 1
        won = await client.post(
            "/v1/events",
            json=purchase("e-new", "c-2", 150.0, occurred_at=_iso(now - dt.timedelta(hours=1))),
            headers=keys["events:write"],
        )
        [code] = [a["code"] for a in won.json()["awards"]]

        async def redeem_at(award: str, at: dt.datetime, order: str) -> Any:
            body = {"order_id": order, "redeemed_at": _iso(at)}
            return await client.post(f"/v1/awards/{award}/redeem", json=body, headers=keys["awards:redeem"])

        backdated = await redeem_at(expired_code, now - dt.timedelta(days=9, hours=12), "o-1")
        future = await redeem_at(code, now + dt.timedelta(hours=1), "o-2")
        before_issue = await redeem_at(code, now - dt.timedelta(hours=2), "o-3")
        spend = await client.post(
            "/v1/customers/c-1/points/redeem",
            json={"points": 1, "order_id": "o-4", "redeemed_at": _iso(now + dt.timedelta(days=1))},
            headers=keys["awards:redeem"],
        )
        offline = await redeem_at(code, now - dt.timedelta(minutes=30), "o-5")

    def complaint(response: Any) -> str:
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "redeemed_at"
        return str(error["message"])

    assert complaint(backdated) == "is further back than offline redemptions may go (`offline_redemptions: 3d`)"
    assert complaint(future).startswith("is in the future")
    assert complaint(before_issue).startswith("is before the award was issued")
    assert complaint(spend).startswith("is in the future")
    assert offline.status_code == 200, offline.text  # a till back online within the window redeems as it did
    assert offline.json()["award"]["status"] == "redeemed"
