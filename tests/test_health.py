"""Liveness and readiness, and that PostgreSQL alone is enough to take events when Redis is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.keys import scopes
from tests.conftest import make_settings, new_key, purchase

Client = AsyncTestClient[Litestar]

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
async def redis_down_app(database_url: str) -> Litestar:
    return create_app(make_settings(database_url, UNREACHABLE_REDIS))


@pytest.fixture(scope="module")
async def redis_down(redis_down_app: Litestar) -> AsyncIterator[Client]:
    """The same database, but a Redis nobody listens on."""
    async with AsyncTestClient(app=redis_down_app, timeout=30) as test_client:
        yield test_client


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql))).scalar_one())


# --- with everything up ---------------------------------------------------------------------------------------


async def test_liveness_is_200_without_a_key(client: Client) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_liveness_ignores_a_bad_authorization_header(client: Client) -> None:
    response = await client.get("/health/live", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


async def test_readiness_is_200_with_database_redis_ok_and_the_rules_version(client: Client, app: Litestar) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "status": "ready",
        "database": "ok",
        "redis": "ok",
        "rules": app.state.registry.current.version,
    }


async def test_readiness_needs_no_key(client: Client) -> None:
    response = await client.get("/health/ready", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200


# --- with Redis unreachable -----------------------------------------------------------------------------------


async def test_readiness_stays_200_but_says_degraded_naming_redis_when_redis_is_unreachable(
    redis_down: Client, redis_down_app: Litestar
) -> None:
    response = await redis_down.get("/health/ready")
    assert response.status_code == 200, response.text  # events are still recorded correctly: stay in rotation
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"] != "ok"
    assert body["redis"].startswith("unreachable")
    assert body["database"] == "ok"
    assert body["rules"] == redis_down_app.state.registry.current.version


async def test_liveness_stays_200_when_redis_is_unreachable(redis_down: Client) -> None:
    response = await redis_down.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_events_are_still_taken_when_redis_is_unreachable(
    redis_down: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    event = purchase("e-no-redis", "c-no-redis", 150.0, customer={"first_name": "Ana"})
    response = await redis_down.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
    assert response.status_code == 201, response.text
    [award] = response.json()["awards"]
    assert award["rule_id"] == "mug-over-100"
    assert await count(engine, "SELECT count(*) FROM events WHERE event_id = 'e-no-redis'") == 1
    assert await count(engine, "SELECT count(*) FROM awards WHERE customer_id = 'c-no-redis'") == 1

    replay = await redis_down.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert replay.json()["awards"] == response.json()["awards"]
    assert await count(engine, "SELECT count(*) FROM awards") == 1


async def test_profiles_are_still_served_when_redis_is_unreachable(redis_down: Client, keys: dict[str, Any]) -> None:
    event = purchase("e-1", "c-no-redis", 40.0)
    assert (await redis_down.post("/v1/events", json=event, headers=keys[scopes.EVENTS_WRITE])).status_code == 201
    response = await redis_down.get("/v1/customers/c-no-redis", headers=keys[scopes.CUSTOMERS_READ])
    assert response.status_code == 200, response.text
    assert response.json()["purchase_count"] == 1


async def test_a_key_never_seen_before_is_checked_against_the_database_when_redis_is_unreachable(
    redis_down: Client, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    response = await redis_down.get("/v1/rules", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


async def test_keys_are_still_refused_properly_when_redis_is_unreachable(
    redis_down: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    genuine = keys[scopes.EVENTS_WRITE]["Authorization"]
    wrong_secret = genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA") else "BBBB")
    event = purchase("e-refused", "c-no-redis", 10.0)

    no_key = await redis_down.post("/v1/events", json=event)
    assert no_key.status_code == 401
    assert no_key.headers["content-type"].startswith("application/problem+json")
    bad_secret = await redis_down.post("/v1/events", json=event, headers={"Authorization": wrong_secret})
    assert bad_secret.status_code == 401
    wrong_scope = await redis_down.post("/v1/events", json=event, headers=keys[scopes.CUSTOMERS_READ])
    assert wrong_scope.status_code == 403
    assert await count(engine, "SELECT count(*) FROM events") == 0


async def test_the_healthy_app_is_unaffected_by_the_app_whose_redis_is_down(client: Client, redis_down: Client) -> None:
    assert (await redis_down.get("/health/ready")).json()["status"] == "degraded"
    assert (await client.get("/health/ready")).json()["status"] == "ready"
