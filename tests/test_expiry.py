"""The expiry job: awards past their date, points unspent for too long; safe to run twice or at once."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.awards.expiry import JobReport, run_expiry
from service.lib.db import transaction
from tests.conftest import purchase

Client = AsyncTestClient[Litestar]
YEAR = dt.timedelta(days=365)


async def run(sessionmaker: async_sessionmaker[AsyncSession], now: str, after: dt.timedelta | None = YEAR) -> JobReport:
    async with transaction(sessionmaker) as session:
        return await run_expiry(session, dt.datetime.fromisoformat(now), after)


async def earn_200(client: Client, keys: dict[str, Any], prefix: str, day: str) -> None:
    """Three purchases on ``day``; the third earns 200 points (and each earns a mug)."""
    for i in range(3):
        event = purchase(f"{prefix}-{i}", "c-1", 150.0 if i == 0 else 10.0, occurred_at=f"{day}T10:0{i}:00Z")
        assert (await client.post("/v1/events", json=event, headers=keys["events:write"])).status_code == 201


async def balance(client: Client, keys: dict[str, Any]) -> int:
    return int((await client.get("/v1/customers/c-1/points", headers=keys["customers:read"])).json()["points_balance"])


async def test_awards_past_their_date_become_expired_once(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await earn_200(client, keys, "a", "2026-03-01")  # the mug lasts 45 days: until 2026-04-15
    assert (await run(sessionmaker, "2026-04-01T00:00:00+00:00")).awards_expired == 0
    assert (await run(sessionmaker, "2026-04-16T00:00:00+00:00")).awards_expired == 1
    assert (await run(sessionmaker, "2026-04-17T00:00:00+00:00")).awards_expired == 0


async def test_unspent_points_expire_a_year_after_they_were_earned_and_only_once(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await earn_200(client, keys, "a", "2026-03-01")
    spent = await client.post(
        "/v1/customers/c-1/points/redeem",
        json={"points": 50, "order_id": "o-1", "redeemed_at": "2026-03-05T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert spent.status_code == 200
    assert (await run(sessionmaker, "2027-02-01T00:00:00+00:00")).points_expired == 0  # not a year yet
    first = await run(sessionmaker, "2027-03-02T00:00:00+00:00")
    second = await run(sessionmaker, "2027-03-03T00:00:00+00:00")
    assert (first.customers_with_points_expired, first.points_expired) == (1, 150)
    assert second.points_expired == 0
    assert await balance(client, keys) == 0
    ledger = (await client.get("/v1/customers/c-1/points", headers=keys["customers:read"])).json()["entries"]
    assert (ledger[0]["reason"], ledger[0]["delta"]) == ("expire", -150)


async def test_points_are_spent_oldest_first_so_recent_earnings_survive(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await earn_200(client, keys, "a", "2026-03-01")
    await earn_200(client, keys, "b", "2026-03-02")  # the sixth purchase earns nothing more
    spent = await client.post(
        "/v1/customers/c-1/points/redeem",
        json={"points": 150, "order_id": "o-1", "redeemed_at": "2026-03-03T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert spent.status_code == 200
    assert await balance(client, keys) == 50
    report = await run(sessionmaker, "2027-03-02T00:00:00+00:00")  # the earning of 1 March is over a year old
    assert report.points_expired == 50
    assert await balance(client, keys) == 0


async def test_without_a_policy_points_never_expire(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await earn_200(client, keys, "a", "2026-03-01")
    assert (await run(sessionmaker, "2030-01-01T00:00:00+00:00", after=None)).points_expired == 0
    assert await balance(client, keys) == 200


async def test_two_replicas_running_the_job_at_once_expire_everything_exactly_once(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await earn_200(client, keys, "a", "2026-03-01")
    reports = await asyncio.gather(*(run(sessionmaker, "2027-06-01T00:00:00+00:00") for _ in range(4)))
    assert sum(r.points_expired for r in reports) == 200
    assert sum(r.awards_expired for r in reports) == 1
    assert await balance(client, keys) == 0
