"""API keys: 401 without a valid key, 403 without the scope, and keys stored only as hashes."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.keys import scopes
from tests.conftest import new_key, purchase

Client = AsyncTestClient[Litestar]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str
    json: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("POST", "/v1/events", scopes.EVENTS_WRITE, purchase("auth-1", "c-auth", 10.0)),
    Route("POST", "/v1/events/batch", scopes.EVENTS_WRITE, {"events": [purchase("auth-2", "c-auth", 10.0)]}),
    Route("GET", "/v1/customers/c-auth", scopes.CUSTOMERS_READ),
    Route("GET", "/v1/rules", scopes.RULES_ADMIN),
]
ROUTE_IDS = [str(r) for r in ROUTES]


async def call(client: Client, route: Route, headers: dict[str, str] | None = None) -> Response:
    return await client.request(route.method, route.path, json=route.json, headers=headers or {})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def raw_key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_unauthorized(response: Response) -> None:
    body = assert_problem(response, 401)
    assert body["type"] == "urn:delight:problem:unauthorized"
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


def unknown_key() -> str:
    """Well formed (``dlk_<16 hex>_<43 urlsafe>``), never issued."""
    return f"dlk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def with_wrong_secret(key: str) -> str:
    prefix, key_id, secret = key.split("_", 2)
    other = secrets.token_urlsafe(32)
    while other == secret:
        other = secrets.token_urlsafe(32)
    return f"{prefix}_{key_id}_{other}"


# --- 401 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_no_authorization_header_is_a_401_with_www_authenticate(
    client: Client, engine: AsyncEngine, route: Route
) -> None:
    assert_unauthorized(await call(client, route))
    assert await count(engine, "events") == 0


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-key",
        "Bearer dlk_",
        "Bearer dlk_0123456789abcdef_short",
        "Bearer dlk_0123456789ABCDEF_" + "a" * 43,  # key id must be lower-case hex
        "Bearer xyz_0123456789abcdef_" + "a" * 43,  # wrong prefix
        "Bearer dlk_0123456789abcdef_" + "a" * 42 + "!",  # not url-safe
        "Bearer dlk_0123456789abcdef_" + "a" * 44,  # too long
        "Basic dXNlcjpwYXNz",
        "Token dlk_0123456789abcdef_" + "a" * 43,
        "dlk_0123456789abcdef_" + "a" * 43,  # no scheme at all
    ],
    ids=lambda v: v[:40],
)
async def test_malformed_key_is_a_401(client: Client, engine: AsyncEngine, route: Route, authorization: str) -> None:
    assert_unauthorized(await call(client, route, {"Authorization": authorization}))
    assert await count(engine, "events") == 0


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_well_formed_but_unknown_key_is_a_401(client: Client, engine: AsyncEngine, route: Route) -> None:
    assert_unauthorized(await call(client, route, bearer(unknown_key())))
    assert await count(engine, "events") == 0


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_known_key_id_with_a_wrong_secret_is_a_401(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, route: Route
) -> None:
    genuine = raw_key(keys["all"])
    # first the genuine key, so that its id is also in the Redis cache: the cache must not skip the secret check
    assert (await call(client, Route("GET", "/v1/rules", scopes.RULES_ADMIN), bearer(genuine))).status_code == 200
    assert_unauthorized(await call(client, route, bearer(with_wrong_secret(genuine))))
    assert await count(engine, "events") == 0


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_revoked_key_is_a_401(
    client: Client, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, route: Route
) -> None:
    key = await new_key(sessionmaker, *scopes.ALL)
    key_id = key.split("_")[1]
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :id"), {"id": key_id})
    assert_unauthorized(await call(client, route, bearer(key)))


async def test_unauthenticated_request_gets_a_401_before_its_body_is_judged(
    client: Client, engine: AsyncEngine
) -> None:
    response = await client.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_unauthorized(response)
    response = await client.post("/v1/events", json={"colour": "red"})
    assert_unauthorized(response)
    assert await count(engine, "events") == 0


# --- 403 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "scope"),
    [(r, s) for r in ROUTES for s in scopes.ALL if s != r.scope],
    ids=[f"{r}-with-{s}" for r in ROUTES for s in scopes.ALL if s != r.scope],
)
async def test_key_without_the_routes_scope_is_a_403(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, route: Route, scope: str
) -> None:
    response = await call(client, route, keys[scope])
    body = assert_problem(response, 403)
    assert body["type"] == "urn:delight:problem:forbidden"
    assert route.scope in body["detail"]
    assert await count(engine, "events") == 0


# --- allowed --------------------------------------------------------------------------------------------------


async def test_events_write_key_may_post_an_event(client: Client, keys: dict[str, Any], engine: AsyncEngine) -> None:
    response = await call(client, ROUTES[0], keys[scopes.EVENTS_WRITE])
    assert response.status_code == 201, response.text
    assert await count(engine, "events") == 1


async def test_events_write_key_may_post_a_batch(client: Client, keys: dict[str, Any], engine: AsyncEngine) -> None:
    response = await call(client, ROUTES[1], keys[scopes.EVENTS_WRITE])
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == [201]
    assert await count(engine, "events") == 1


async def test_customers_read_key_may_read_a_customer(client: Client, keys: dict[str, Any]) -> None:
    assert (await call(client, ROUTES[0], keys[scopes.EVENTS_WRITE])).status_code == 201
    response = await call(client, ROUTES[2], keys[scopes.CUSTOMERS_READ])
    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == "c-auth"


async def test_rules_admin_key_may_read_the_rules(client: Client, keys: dict[str, Any]) -> None:
    response = await call(client, ROUTES[3], keys[scopes.RULES_ADMIN])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
async def test_key_with_every_scope_passes_every_guard(client: Client, keys: dict[str, Any], route: Route) -> None:
    response = await call(client, route, keys["all"])
    assert response.status_code not in (401, 403), response.text


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
async def test_the_bearer_scheme_is_case_insensitive(client: Client, keys: dict[str, Any], scheme: str) -> None:
    key = raw_key(keys[scopes.RULES_ADMIN])
    response = await client.get("/v1/rules", headers={"Authorization": f"{scheme} {key}"})
    assert response.status_code == 200, response.text


async def test_a_new_key_works_at_once_and_a_second_use_works_too(
    client: Client, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200  # now from the cache


# --- storage --------------------------------------------------------------------------------------------------


async def test_a_key_is_stored_only_as_a_hash(
    client: Client, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, redis: Redis
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN, scopes.EVENTS_WRITE)
    _, key_id, secret = key.split("_", 2)
    # use it once so that whatever caching the verifier does has happened
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200

    async with engine.connect() as connection:
        row = (
            (await connection.execute(text("SELECT * FROM api_keys WHERE key_id = :id"), {"id": key_id}))
            .mappings()
            .one()
        )
    assert row["name"] == "test"
    assert sorted(row["scopes"]) == [scopes.EVENTS_WRITE, scopes.RULES_ADMIN]
    stored_hash = bytes(row["secret_hash"])
    assert len(stored_hash) == 32
    for column, value in row.items():
        as_bytes = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
        as_text = as_bytes.decode("latin-1")
        for forbidden in (key, secret):
            assert forbidden not in as_text, f"api_keys.{column} holds the raw key"
            assert forbidden.encode() not in as_bytes, f"api_keys.{column} holds the raw key"
            assert forbidden.encode().hex() not in as_text, f"api_keys.{column} holds the raw key in hex"

    async for redis_key in redis.scan_iter():
        assert secret.encode() not in redis_key
        if await redis.type(redis_key) == b"string":
            value = await redis.get(redis_key)
            assert secret.encode() not in (value or b""), f"Redis {redis_key!r} holds the raw secret"


async def test_two_keys_never_share_an_id_or_a_hash(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    first = await new_key(sessionmaker, scopes.REPORTS_READ)
    second = await new_key(sessionmaker, scopes.REPORTS_READ)
    assert first != second
    assert first.split("_")[1] != second.split("_")[1]


# --- GET /v1/rules --------------------------------------------------------------------------------------------


async def test_rules_endpoint_shows_the_active_version_load_time_and_test_campaigns(
    client: Client, keys: dict[str, Any], app: Litestar
) -> None:
    response = await client.get("/v1/rules", headers=keys[scopes.RULES_ADMIN])
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == app.state.registry.current.version
    assert body["version"]
    loaded_at = dt.datetime.fromisoformat(body["loaded_at"])
    assert loaded_at.tzinfo is not None
    assert loaded_at <= dt.datetime.now(dt.UTC)
    [campaign] = body["campaigns"]
    assert campaign["campaign"] == "loyal"
    assert campaign["description"] == "Rules whose outcome the tests know in advance"
    assert campaign["active_from"] == "2026-01-01"
    assert campaign["active_until"] == "2099-12-31"
    assert campaign["source"].endswith("loyal.yaml")
    rules = {r["id"]: r for r in campaign["rules"]}
    assert list(rules) == ["mug-over-100", "points-on-third", "review-offer", "vase-sometimes"]
    assert rules["mug-over-100"]["when"] == 'type == "purchase" and order.total >= 100'
    assert rules["mug-over-100"]["kind"] == "gift"
    assert rules["points-on-third"]["kind"] == "points"
    assert rules["review-offer"]["kind"] == "offer"
    assert rules["vase-sometimes"]["chance"] == 0.5
    assert rules["mug-over-100"]["chance"] == 1.0
    assert all(r["line"] > 0 for r in rules.values())


async def test_rules_version_is_stable_across_reads(client: Client, keys: dict[str, Any]) -> None:
    first = (await client.get("/v1/rules", headers=keys[scopes.RULES_ADMIN])).json()
    second = (await client.get("/v1/rules", headers=keys[scopes.RULES_ADMIN])).json()
    assert first["version"] == second["version"]
    assert first["loaded_at"] == second["loaded_at"]
