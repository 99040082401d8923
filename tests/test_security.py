"""Security of the admin surface: keys over HTTP and the CLI, the audit log, point adjustments, erasure, limits.

Everything goes through the real HTTP stack against the real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import itertools
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from httpx import Response
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.keys import scopes
from service.keys.service import KeyVerifier
from service.lib.settings import Settings
from tests.conftest import ROOT, AppFactory, interaction, make_settings, new_key, purchase, serving

Client = AsyncTestClient[Litestar]
Json = dict[str, Any]

KEY_PATTERN = re.compile(r"^dlk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
KEY_FIELDS = {"key_id", "name", "scopes", "created_at", "last_used_at", "revoked_at"}
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
OTHER_THAN = {scope: [s for s in scopes.ALL if s != scope] for scope in scopes.ALL}


# ------------------------------------------------------------------------------------------------------ helpers


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def raw_key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def key_id_of(key_or_headers: str | dict[str, str]) -> str:
    key = raw_key(key_or_headers) if isinstance(key_or_headers, dict) else key_or_headers
    return key.split("_")[1]


def assert_problem(response: Response, status: int) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: Json = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:delight:problem:")
    assert body["title"]
    assert body["detail"]
    return body


def error_fields(body: Json) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one()


async def create_key_over_http(client: Client, keys: dict[str, Any], name: str, key_scopes: list[str]) -> Json:
    response = await client.post("/v1/keys", json={"name": name, "scopes": key_scopes}, headers=keys["keys:admin"])
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


async def list_keys(client: Client, keys: dict[str, Any]) -> dict[str, Json]:
    response = await client.get("/v1/keys", headers=keys["keys:admin"])
    assert response.status_code == 200, response.text
    return {k["key_id"]: k for k in response.json()["keys"]}


async def audit(client: Client, keys: dict[str, Any], **params: Any) -> list[Json]:
    response = await client.get("/v1/audit", params=params, headers=keys["rules:admin"])
    assert response.status_code == 200, response.text
    entries: list[Json] = response.json()["entries"]
    return entries


async def customer(client: Client, keys: dict[str, Any], customer_id: str) -> Json:
    response = await client.get(f"/v1/customers/{customer_id}", headers=keys["customers:read"])
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def post_event(client: Client, keys: dict[str, Any], event: Json) -> Json:
    response = await client.post("/v1/events", json=event, headers=keys["events:write"])
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


async def adjust(client: Client, headers: dict[str, str], customer_id: str, **body: Any) -> Response:
    return await client.post(f"/v1/customers/{customer_id}/points/adjust", json=body, headers=headers)


def settings_with(database_url: str, redis_url: str, **app_changes: Any) -> Settings:
    base = make_settings(database_url, redis_url)
    return dataclasses.replace(base, app=dataclasses.replace(base.app, **app_changes))


async def run_cli(database_url: str, redis_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``delight`` as a subprocess, on the test database (never an embedded one)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {
        "DELIGHT_DATABASE_URL": database_url,
        "DELIGHT_REDIS_URL": redis_url,
        "DELIGHT_DATA_DIR": str(tmp_path / "data"),
        "DELIGHT_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "delight"),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert not (tmp_path / "data").exists()  # it used the test database
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# ------------------------------------------------------------------------------------------- 1. keys over HTTP


async def test_a_key_created_over_http_is_shown_once_and_stored_only_as_a_hash(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, redis: Redis
) -> None:
    response = await client.post(
        "/v1/keys",
        json={"name": "till 7", "scopes": ["events:write", "customers:read", "events:write"]},
        headers=keys["keys:admin"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"key_id", "name", "scopes", "key"}
    assert body["name"] == "till 7"
    assert body["scopes"] == ["customers:read", "events:write"]
    match = KEY_PATTERN.match(body["key"])
    assert match, body["key"]
    assert match.group(1) == body["key_id"]
    secret = match.group(2)
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32  # 256 bits of randomness

    # the key works at once, with exactly its scopes
    key = body["key"]
    assert (await client.get("/v1/customers/nobody", headers=bearer(key))).status_code == 404
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 403

    async with engine.connect() as connection:
        row = (
            (await connection.execute(text("SELECT * FROM api_keys WHERE key_id = :id"), {"id": body["key_id"]}))
            .mappings()
            .one()
        )
    assert bytes(row["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    for column, value in row.items():
        as_bytes = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
        as_text = as_bytes.decode("latin-1")
        for forbidden in (key, secret):
            assert forbidden not in as_text, f"api_keys.{column} holds the raw key"
            assert forbidden.encode().hex() not in as_text, f"api_keys.{column} holds the raw key in hex"
    async for redis_key in redis.scan_iter(match="delight:*"):
        if await redis.type(redis_key) == b"string":
            assert secret.encode() not in (await redis.get(redis_key) or b""), redis_key

    # shown once: the list never carries it
    listed = await client.get("/v1/keys", headers=keys["keys:admin"])
    assert key not in listed.text
    assert secret not in listed.text


async def test_the_key_list_shows_every_key_without_secret_or_hash(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    created = await create_key_over_http(client, keys, "list probe", ["reports:read"])
    response = await client.get("/v1/keys", headers=keys["keys:admin"])
    assert response.status_code == 200, response.text
    listed = response.json()["keys"]
    assert all(set(k) == KEY_FIELDS for k in listed), listed
    mine = next(k for k in listed if k["key_id"] == created["key_id"])
    assert (mine["name"], mine["scopes"], mine["revoked_at"]) == ("list probe", ["reports:read"], None)
    assert key_id_of(keys["keys:admin"]) in {k["key_id"] for k in listed}
    assert len(listed) == await scalar(engine, "SELECT count(*) FROM api_keys")

    async with engine.connect() as connection:
        hashes = [bytes(h) for h in (await connection.execute(text("SELECT secret_hash FROM api_keys"))).scalars()]
    for stored in hashes:
        for encoded in (stored.hex(), base64.b64encode(stored).decode(), base64.urlsafe_b64encode(stored).decode()):
            assert encoded.rstrip("=") not in response.text
    secret = created["key"].split("_", 2)[2]
    assert secret not in response.text


async def test_a_revoked_key_is_refused_on_the_very_next_request_and_revoking_again_is_200(
    client: Client, keys: dict[str, Any], redis: Redis
) -> None:
    created = await create_key_over_http(client, keys, "to revoke", ["rules:admin"])
    key_id, key = created["key_id"], created["key"]
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200
    assert await redis.exists(f"delight:key:{key_id}") == 1  # verified and cached for a while

    response = await client.delete(f"/v1/keys/{key_id}", headers=keys["keys:admin"])
    assert response.status_code == 200, response.text
    revoked = response.json()
    assert set(revoked) == KEY_FIELDS
    assert revoked["key_id"] == key_id
    assert revoked["revoked_at"] is not None
    assert await redis.get(f"delight:key:{key_id}") == b"revoked"  # the cache says revoked, on every replica

    refused = await client.get("/v1/rules", headers=bearer(key))
    body = assert_problem(refused, 401)
    assert body["type"] == "urn:delight:problem:unauthorized"

    again = await client.delete(f"/v1/keys/{key_id}", headers=keys["keys:admin"])
    assert again.status_code == 200, again.text
    assert again.json()["revoked_at"] == revoked["revoked_at"]  # the first revocation stands
    assert (await list_keys(client, keys))[key_id]["revoked_at"] == revoked["revoked_at"]
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 401
    revocations = [e for e in await audit(client, keys, action="key.revoked") if e["subject"] == key_id]
    assert len(revocations) == 1  # revoking again changes nothing and audits nothing


class PausedCacheFill:
    """The shared Redis as another replica sees it, paused between reading a key from PostgreSQL and caching it."""

    def __init__(self, real: Redis) -> None:
        self.real = real
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, name: str) -> Any:
        return await self.real.get(name)

    def register_script(self, script: str) -> Any:  # the cache is read through a script on the real server
        return self.real.register_script(script)

    async def set(self, name: str, value: Any, **options: Any) -> Any:
        if name.startswith("delight:key:"):
            self.loaded.set()
            await self.release.wait()
        return await self.real.set(name, value, **options)


async def test_a_verification_in_flight_during_a_revocation_does_not_bring_the_key_back(
    client: Client, keys: dict[str, Any], sessionmaker: async_sessionmaker[AsyncSession], redis: Redis
) -> None:
    created = await create_key_over_http(client, keys, "race probe", ["rules:admin"])
    key_id, key = created["key_id"], created["key"]
    paused = PausedCacheFill(redis)
    other_replica = KeyVerifier(sessionmaker, cast("Redis", paused))
    in_flight = asyncio.create_task(other_replica.verify(key))
    try:
        await asyncio.wait_for(paused.loaded.wait(), timeout=10)  # it has read the key, still active, from the table
        assert (await client.delete(f"/v1/keys/{key_id}", headers=keys["keys:admin"])).status_code == 200
    finally:
        paused.release.set()
        await in_flight
    try:
        assert_problem(await client.get("/v1/rules", headers=bearer(key)), 401)
    finally:
        await redis.delete(f"delight:key:{key_id}")


async def test_revoking_an_unknown_key_is_a_404(client: Client, keys: dict[str, Any]) -> None:
    body = assert_problem(await client.delete("/v1/keys/0123456789abcdef", headers=keys["keys:admin"]), 404)
    assert body["type"] == "urn:delight:problem:not-found"
    assert "0123456789abcdef" in body["detail"]


@pytest.mark.parametrize(
    "key_id", ["nope", "0123456789ABCDEF", "0123456789abcdef0", "0123456789abcde", "0123456789abcdeg"]
)
async def test_revoking_a_malformed_key_id_is_a_problem_document(
    client: Client, keys: dict[str, Any], key_id: str
) -> None:
    response = await client.delete(f"/v1/keys/{key_id}", headers=keys["keys:admin"])
    assert response.status_code in (400, 422), response.text
    body = assert_problem(response, response.status_code)
    assert "key_id" in error_fields(body) or "key_id" in body["detail"], body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["events:destroy"]}, "scopes"),
        ({"name": "x", "scopes": ["events:write", "admin"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": "events:write"}, "scopes"),
        ({"scopes": ["events:write"]}, "name"),
        ({"name": "", "scopes": ["events:write"]}, "name"),
        ({"name": "line\nbreak", "scopes": ["events:write"]}, "name"),
        ({"name": "x", "scopes": ["events:write"], "admin": True}, "admin"),
        ({"name": "x", "scopes": ["events:write"], "key": "dlk_0123456789abcdef_" + "a" * 43}, "key"),
    ],
    ids=[
        "unknown-scope",
        "one-unknown-scope",
        "empty-scopes",
        "scopes-not-a-list",
        "missing-name",
        "empty-name",
        "control-char-name",
        "extra-field",
        "chosen-key",
    ],
)
async def test_a_bad_create_body_is_a_422_naming_the_field_and_stores_nothing(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, body: Json, field: str
) -> None:
    before = await scalar(engine, "SELECT count(*) FROM api_keys")
    response = await client.post("/v1/keys", json=body, headers=keys["keys:admin"])
    problem = assert_problem(response, 422)
    assert field in error_fields(problem), problem
    assert await scalar(engine, "SELECT count(*) FROM api_keys") == before


async def test_key_admin_needs_the_keys_admin_scope(client: Client, keys: dict[str, Any], engine: AsyncEngine) -> None:
    target = key_id_of(keys["events:write"])
    before = await scalar(engine, "SELECT count(*) FROM api_keys")
    for scope in OTHER_THAN[scopes.KEYS_ADMIN]:
        await refused_key_admin(client, keys[scope], scope, target)
    assert await scalar(engine, "SELECT count(*) FROM api_keys") == before
    assert (
        await scalar(engine, "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL AND key_id = :id", id=target)
        == 0
    )


async def refused_key_admin(client: Client, headers: dict[str, str], scope: str, target: str) -> None:
    for response in (
        await client.get("/v1/keys", headers=headers),
        await client.post("/v1/keys", json={"name": "x", "scopes": ["keys:admin"]}, headers=headers),
        await client.delete(f"/v1/keys/{target}", headers=headers),
    ):
        body = assert_problem(response, 403)
        assert "keys:admin" in body["detail"], scope


async def test_key_admin_without_a_key_is_a_401(client: Client) -> None:
    assert_problem(await client.get("/v1/keys"), 401)
    assert_problem(await client.post("/v1/keys", json={"name": "x", "scopes": ["keys:admin"]}), 401)
    assert_problem(await client.delete("/v1/keys/0123456789abcdef"), 401)


async def test_last_used_at_is_set_once_the_key_is_used(client: Client, keys: dict[str, Any]) -> None:
    created = await create_key_over_http(client, keys, "usage probe", ["reports:read"])
    assert (await list_keys(client, keys))[created["key_id"]]["last_used_at"] is None
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    assert (await client.get("/v1/reports/redemptions", headers=bearer(created["key"]))).status_code == 200
    used = (await list_keys(client, keys))[created["key_id"]]["last_used_at"]
    assert used is not None
    assert started <= dt.datetime.fromisoformat(used) <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)


# ------------------------------------------------------------------------------------------------------- 2. CLI


async def test_cli_lists_and_revokes_keys(
    client: Client, keys: dict[str, Any], database_url: str, redis_url: str, tmp_path: Path, redis: Redis
) -> None:
    created = await create_key_over_http(client, keys, "cli probe", ["rules:admin", "reports:read"])
    key_id, key = created["key_id"], created["key"]
    secret = key.split("_", 2)[2]

    code, out, err = await run_cli(database_url, redis_url, tmp_path, "keys", "list")
    assert code == 0, err
    [line] = [ln for ln in out.splitlines() if ln.startswith(key_id)]
    assert "cli probe" in line
    assert "reports:read,rules:admin" in line
    assert key_id_of(keys["keys:admin"]) in out
    assert secret not in out
    assert secret not in err

    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200
    assert await redis.exists(f"delight:key:{key_id}") == 1
    code, out, err = await run_cli(database_url, redis_url, tmp_path, "keys", "revoke", key_id)
    assert code == 0, err
    assert out.strip() == f"Key {key_id} revoked."
    assert_problem(await client.get("/v1/rules", headers=bearer(key)), 401)  # at once: the CLI dropped the cache
    assert (await list_keys(client, keys))[key_id]["revoked_at"] is not None
    [entry] = [e for e in await audit(client, keys, action="key.revoked") if e["subject"] == key_id]
    assert entry["actor"] == "cli"
    assert entry["details"] == {"name": "cli probe", "scopes": ["reports:read", "rules:admin"]}

    code, out, err = await run_cli(database_url, redis_url, tmp_path, "keys", "revoke", "fedcba9876543210")
    assert code == 1
    assert "no key 'fedcba9876543210'" in err


# ------------------------------------------------------------------------------------------------- 3. audit log


async def test_the_audit_log_needs_rules_admin(client: Client, keys: dict[str, Any]) -> None:
    for scope in OTHER_THAN[scopes.RULES_ADMIN]:
        body = assert_problem(await client.get("/v1/audit", headers=keys[scope]), 403)
        assert "rules:admin" in body["detail"], scope
    assert (await client.get("/v1/audit", headers=keys["all"])).status_code == 200


async def test_the_audit_log_without_a_key_is_a_401(client: Client) -> None:
    assert_problem(await client.get("/v1/audit"), 401)


async def test_key_creation_and_revocation_are_audited_with_the_acting_key(
    client: Client, keys: dict[str, Any]
) -> None:
    admin_id = key_id_of(keys["keys:admin"])
    created = await create_key_over_http(client, keys, "audited", ["events:write", "reports:read"])
    assert (await client.delete(f"/v1/keys/{created['key_id']}", headers=keys["keys:admin"])).status_code == 200

    entries = await audit(client, keys)
    mine = [e for e in entries if e["subject"] == created["key_id"]]
    assert [e["action"] for e in mine] == ["key.revoked", "key.created"]  # newest first
    revoked, made = mine
    assert made["actor"] == revoked["actor"] == f"key {admin_id}"
    assert made["details"] == {"name": "audited", "scopes": ["events:write", "reports:read"]}
    assert revoked["details"] == {"name": "audited", "scopes": ["events:write", "reports:read"]}
    assert revoked["entry_id"] > made["entry_id"]
    assert dt.datetime.fromisoformat(made["at"]) <= dt.datetime.fromisoformat(revoked["at"])
    assert created["key"] not in str(entries)


async def test_a_rules_reload_that_changes_the_version_is_audited_with_the_previous_version(
    rules_app: AppFactory, keys: dict[str, Any], tmp_path: Path
) -> None:
    campaign = """\
        campaign: audit-probe
        rules:
          - id: big
            when: type == "purchase" and order.total >= 100
            award: {gift: mug}
        """
    async with rules_app(campaign) as app:
        first = (await app.get("/v1/rules", headers=keys["rules:admin"])).json()["version"]
        [startup] = [e for e in await audit(app, keys, action="rules.activated") if e["subject"] == first]
        assert startup["actor"] == "startup"

        unchanged = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert unchanged.status_code == 200, unchanged.text
        assert unchanged.json()["changed"] is False
        assert [e for e in await audit(app, keys, action="rules.activated") if e["subject"] == first] == [startup]

        source = tmp_path / "rules-0" / "c0.yaml"
        source.write_text(source.read_text().replace(">= 100", ">= 200"))
        response = await app.post("/v1/rules/reload", headers=keys["rules:admin"])
        assert response.status_code == 200, response.text
        reloaded = response.json()
        assert reloaded["changed"] is True
        assert reloaded["previous_version"] == first
        second = reloaded["version"]

        latest = (await audit(app, keys, action="rules.activated"))[0]
        assert latest["action"] == "rules.activated"
        assert latest["subject"] == second
        assert latest["actor"] == f"key {key_id_of(keys['rules:admin'])}"
        assert latest["details"]["previous_version"] == first
        assert latest["details"]["rules"] == 1


async def test_point_adjustments_are_audited(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("aud-1", "c-audit", 40.0))
    response = await adjust(
        client, keys["rules:admin"], "c-audit", points=75, note="goodwill: late parcel", adjustment_id="adj-aud-1"
    )
    assert response.status_code == 200, response.text
    await adjust(client, keys["rules:admin"], "c-audit", points=75, note="again", adjustment_id="adj-aud-1")
    [entry] = await audit(client, keys, action="points.adjusted")
    assert entry["actor"] == f"key {key_id_of(keys['rules:admin'])}"
    assert entry["subject"] == "c-audit"
    assert entry["details"] == {
        "points": 75,
        "note": "goodwill: late parcel",
        "adjustment_id": "adj-aud-1",
        "balance": 75,
    }


async def test_the_audit_log_pages_newest_first_and_filters_by_action(client: Client, keys: dict[str, Any]) -> None:
    made = [await create_key_over_http(client, keys, f"page {i}", ["reports:read"]) for i in range(5)]
    for key in made[:2]:
        assert (await client.delete(f"/v1/keys/{key['key_id']}", headers=keys["keys:admin"])).status_code == 200

    everything = await audit(client, keys, limit=500)
    ids = [e["entry_id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(everything) >= 7

    paged: list[Json] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        response = await client.get("/v1/audit", params=params, headers=keys["rules:admin"])
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["entries"]) <= 3
        paged.extend(page["entries"])
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["entries"][-1]["entry_id"]
        params = {"limit": 3, "before": page["next_before"]}
    assert paged == everything

    older = await audit(client, keys, before=everything[1]["entry_id"], limit=500)
    assert older == everything[2:]

    revocations = await audit(client, keys, action="key.revoked")
    assert {e["subject"] for e in revocations} == {k["key_id"] for k in made[:2]}
    creations = await audit(client, keys, action="key.created", limit=500)
    assert {k["key_id"] for k in made} <= {e["subject"] for e in creations}
    assert {e["action"] for e in creations} == {"key.created"}
    assert await audit(client, keys, action="no.such.action") == []


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "before=0", "limit=x", "before=-3"])
async def test_bad_audit_paging_is_a_400(client: Client, keys: dict[str, Any], query: str) -> None:
    response = await client.get(f"/v1/audit?{query}", headers=keys["rules:admin"])
    assert response.status_code in (400, 422), response.text
    assert_problem(response, response.status_code)


# ----------------------------------------------------------------------------------------- 4. point adjustments


async def test_credit_and_debit_keep_the_balance_at_or_above_zero(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("adj-1", "c-adj", 40.0))
    admin = keys["rules:admin"]

    credit = await adjust(client, admin, "c-adj", points=300, note="goodwill", adjustment_id="a-1")
    assert credit.status_code == 200, credit.text
    assert credit.json() == {
        "customer_id": "c-adj",
        "adjustment_id": "a-1",
        "points": 300,
        "points_balance": 300,
        "replay": False,
    }
    debit = await adjust(client, admin, "c-adj", points=-120, note="correction", adjustment_id="a-2")
    assert debit.status_code == 200, debit.text
    assert debit.json()["points_balance"] == 180

    too_much = await adjust(client, admin, "c-adj", points=-181, note="too much", adjustment_id="a-3")
    body = assert_problem(too_much, 409)
    assert body["type"] == "urn:delight:problem:insufficient-points"
    assert (await customer(client, keys, "c-adj"))["points_balance"] == 180

    to_zero = await adjust(client, admin, "c-adj", points=-180, note="all of it", adjustment_id="a-3")
    assert to_zero.status_code == 200, to_zero.text  # the refused attempt did not use up its id
    assert to_zero.json()["points_balance"] == 0
    assert_problem(await adjust(client, admin, "c-adj", points=-1, note="below", adjustment_id="a-4"), 409)

    profile = await customer(client, keys, "c-adj")
    assert profile["points_balance"] == 0
    ledger = (await client.get("/v1/customers/c-adj/points", headers=keys["customers:read"])).json()
    adjustments = [e for e in ledger["entries"] if e["reason"] == "adjust"]
    assert [(e["delta"], e["order_id"]) for e in adjustments] == [(-180, "a-3"), (-120, "a-2"), (300, "a-1")]
    assert sum(e["delta"] for e in ledger["entries"]) == ledger["points_balance"] == 0


async def test_an_adjustment_is_idempotent_per_adjustment_id(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("idem-1", "c-idem", 40.0))
    admin = keys["rules:admin"]
    first = await adjust(client, admin, "c-idem", points=50, note="goodwill", adjustment_id="same")
    assert first.status_code == 200
    assert first.json()["replay"] is False
    again = await adjust(client, admin, "c-idem", points=50, note="goodwill, sent again", adjustment_id="same")
    assert again.status_code == 200, again.text
    assert again.json() == {
        "customer_id": "c-idem",
        "adjustment_id": "same",
        "points": 50,
        "points_balance": 50,
        "replay": True,
    }
    other = await adjust(client, admin, "c-idem", points=60, note="other points", adjustment_id="same")
    body = assert_problem(other, 409)
    assert "50" in body["detail"]
    other_sign = await adjust(client, admin, "c-idem", points=-50, note="other sign", adjustment_id="same")
    assert_problem(other_sign, 409)
    assert (await customer(client, keys, "c-idem"))["points_balance"] == 50
    assert len(await audit(client, keys, action="points.adjusted")) == 1


async def test_twenty_identical_adjustments_at_once_apply_once(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    await post_event(client, keys, purchase("conc-1", "c-conc", 40.0))
    admin = keys["rules:admin"]
    responses = await asyncio.gather(
        *(adjust(client, admin, "c-conc", points=250, note="storm", adjustment_id="storm-1") for _ in range(20))
    )
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    replays = sorted(r.json()["replay"] for r in responses)
    assert replays == [False] + [True] * 19
    assert {r.json()["points_balance"] for r in responses} == {250}
    assert (await customer(client, keys, "c-conc"))["points_balance"] == 250
    sql = "SELECT count(*) FROM points_ledger WHERE customer_id = 'c-conc' AND reason = 'adjust'"
    assert await scalar(engine, sql) == 1
    assert len(await audit(client, keys, action="points.adjusted")) == 1


async def test_concurrent_debits_never_take_the_balance_below_zero(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("debit-1", "c-debits", 40.0))
    admin = keys["rules:admin"]
    assert (await adjust(client, admin, "c-debits", points=100, note="seed", adjustment_id="seed")).status_code == 200
    responses = await asyncio.gather(
        *(adjust(client, admin, "c-debits", points=-30, note="debit", adjustment_id=f"d-{i}") for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [409] * 7, [r.text for r in responses]
    assert (await customer(client, keys, "c-debits"))["points_balance"] == 10


async def test_a_zero_adjustment_is_a_422(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("zero-1", "c-zero", 40.0))
    body = assert_problem(
        await adjust(client, keys["rules:admin"], "c-zero", points=0, note="n", adjustment_id="z"), 422
    )
    assert "points" in error_fields(body)
    assert await audit(client, keys, action="points.adjusted") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points": 5, "note": "n"}, "adjustment_id"),
        ({"points": 5, "adjustment_id": "x"}, "note"),
        ({"points": "5", "note": "n", "adjustment_id": "x"}, "points"),
        ({"points": 5.5, "note": "n", "adjustment_id": "x"}, "points"),
        ({"points": 100_000_001, "note": "n", "adjustment_id": "x"}, "points"),
        ({"points": 5, "note": "n", "adjustment_id": "x", "points_balance": 10**9}, "points_balance"),
    ],
    ids=["no-id", "no-note", "points-as-text", "fractional", "too-many", "sets-the-balance"],
)
async def test_a_bad_adjustment_body_is_a_422_naming_the_field(
    client: Client, keys: dict[str, Any], body: Json, field: str
) -> None:
    await post_event(client, keys, purchase("bad-adj-1", "c-bad-adj", 40.0))
    problem = assert_problem(await adjust(client, keys["rules:admin"], "c-bad-adj", **body), 422)
    assert field in error_fields(problem), problem
    assert (await customer(client, keys, "c-bad-adj"))["points_balance"] == 0


async def test_adjusting_an_unknown_customer_is_a_404(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    response = await adjust(client, keys["rules:admin"], "c-nobody", points=10, note="n", adjustment_id="u-1")
    body = assert_problem(response, 404)
    assert body["type"] == "urn:delight:problem:not-found"
    assert await scalar(engine, "SELECT count(*) FROM points_ledger") == 0
    assert await scalar(engine, "SELECT count(*) FROM customers") == 0


async def test_adjusting_points_needs_rules_admin(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("scope-adj-1", "c-scope-adj", 40.0))
    for scope in OTHER_THAN[scopes.RULES_ADMIN]:  # awards:redeem included
        response = await adjust(client, keys[scope], "c-scope-adj", points=1000, note="n", adjustment_id="s-1")
        body = assert_problem(response, 403)
        assert "rules:admin" in body["detail"], scope
    assert (await customer(client, keys, "c-scope-adj"))["points_balance"] == 0


# -------------------------------------------------------------------------------------------------- 5. erasure

ERASED_ID = "shopper-7f3a-9q"
FIRST_NAME = "Zephyrine"
LAST_NAME = "Quackenbush"
EMAIL = "zq-erasure@example.org"
BIRTHDAY = "1987-06-05"
SEGMENT = "vip-xq-segment"
PERSONAL = (ERASED_ID, FIRST_NAME, LAST_NAME, EMAIL, BIRTHDAY, SEGMENT)
ERASURE_TABLES = (
    "customers",
    "events",
    "awards",
    "exposures",
    "first_exposures",
    "customer_timelines",
    "points_ledger",
    "audit_log",
    "outbox",
    "counters",
)
REDEMPTIONS = "/v1/reports/redemptions?campaign=loyal&as_of=2026-11-23T00:00:00Z"
UPLIFT = "/v1/reports/uplift?campaign=loyal&window_days=30"


STORY_PROFILE = {
    "first_name": FIRST_NAME,
    "last_name": LAST_NAME,
    "email": EMAIL,
    "birthday": BIRTHDAY,
    "segments": [SEGMENT],
    "language": "es",
}


async def erasure_story(client: Client, keys: dict[str, Any]) -> str:
    """A customer with personal data, three purchases, a review, a gift redeemed and an adjustment; a bystander."""
    profile = STORY_PROFILE
    first = await post_event(
        client, keys, purchase("ev-a1", ERASED_ID, 150.0, occurred_at="2026-03-01T10:00:00Z", customer=profile)
    )
    mug = next(a for a in first["awards"] if a["rule_id"] == "mug-over-100")
    assert mug["message"] == f"Enjoy your mug, {FIRST_NAME}!"
    await post_event(client, keys, purchase("ev-a2", ERASED_ID, 40.0, occurred_at="2026-03-05T10:00:00Z"))
    third = await post_event(client, keys, purchase("ev-a3", ERASED_ID, 60.0, occurred_at="2026-03-10T10:00:00Z"))
    assert [a["rule_id"] for a in third["awards"]] == ["points-on-third"]
    review = interaction("ev-a4", ERASED_ID, rating=5)
    assert [a["rule_id"] for a in (await post_event(client, keys, review))["awards"]] == ["review-offer"]
    redeemed = await client.post(
        f"/v1/awards/{mug['code']}/redeem",
        json={"order_id": "till-a1", "redeemed_at": "2026-03-02T10:00:00Z"},
        headers=keys["awards:redeem"],
    )
    assert redeemed.status_code == 200, redeemed.text
    adjusted = await adjust(
        client, keys["rules:admin"], ERASED_ID, points=40, note=f"Sorry {FIRST_NAME}", adjustment_id="adj-e1"
    )
    assert adjusted.status_code == 200, adjusted.text
    spent = await client.post(
        f"/v1/customers/{ERASED_ID}/points/redeem", json={"points": 30, "order_id": "till-a2"}, headers=keys["all"]
    )
    assert spent.status_code == 200, spent.text

    await post_event(client, keys, purchase("ev-b1", "bystander-1", 130.0, occurred_at="2026-03-03T10:00:00Z"))
    await post_event(client, keys, purchase("ev-b2", "bystander-1", 20.0, occurred_at="2026-03-20T10:00:00Z"))
    # a later purchase by someone never exposed moves the report's clock past every 30-day window
    await post_event(client, keys, purchase("ev-c1", "bystander-2", 10.0, occurred_at="2026-06-01T10:00:00Z"))
    return str(mug["code"])


async def reports(client: Client, keys: dict[str, Any]) -> tuple[Json, Json]:
    redemptions = await client.get(REDEMPTIONS, headers=keys["reports:read"])
    assert redemptions.status_code == 200, redemptions.text
    uplift = await client.get(UPLIFT, headers=keys["reports:read"])
    assert uplift.status_code == 200, uplift.text
    return redemptions.json(), uplift.json()


async def rows_mentioning(engine: AsyncEngine, needle: str) -> dict[str, int]:
    found = {}
    async with engine.connect() as connection:
        for table in ERASURE_TABLES:
            sql = f"SELECT count(*) FROM {table} AS t WHERE strpos(lower(t::text), lower(:needle)) > 0"
            n = int((await connection.execute(text(sql), {"needle": needle})).scalar_one())
            if n:
                found[table] = n
    return found


async def test_erasure_drops_personal_data_everywhere_and_keeps_the_numbers(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    await erasure_story(client, keys)
    for needle in PERSONAL:
        assert await rows_mentioning(engine, needle), f"the story should have stored {needle!r}"
    redemptions_before, uplift_before = await reports(client, keys)
    assert redemptions_before["rules"], redemptions_before
    treated = uplift_before["campaign_total"]["treated"]
    assert (treated["customers"], treated["repeaters"]) == (2, 2), uplift_before["campaign_total"]
    balance_before = (await customer(client, keys, ERASED_ID))["points_balance"]
    counts_before = {t: await scalar(engine, f"SELECT count(*) FROM {t}") for t in ERASURE_TABLES}

    response = await client.delete(f"/v1/customers/{ERASED_ID}", headers=keys["customers:erase"])
    assert response.status_code == 204, response.text
    assert response.content == b""

    leaks = {needle: found for needle in PERSONAL if (found := await rows_mentioning(engine, needle))}
    assert leaks == {}, f"personal data left after erasure: {leaks}"

    assert_problem(await client.get(f"/v1/customers/{ERASED_ID}", headers=keys["customers:read"]), 404)
    assert_problem(await client.get(f"/v1/customers/{ERASED_ID}/points", headers=keys["customers:read"]), 404)
    assert_problem(await client.delete(f"/v1/customers/{ERASED_ID}", headers=keys["customers:erase"]), 404)

    # nothing was deleted: the rows now belong to one unlinkable pseudonym
    counts_after = {t: await scalar(engine, f"SELECT count(*) FROM {t}") for t in ERASURE_TABLES}
    assert {t: n for t, n in counts_after.items() if t != "audit_log"} == {
        t: n for t, n in counts_before.items() if t != "audit_log"
    }
    async with engine.connect() as connection:
        pseudonyms = {
            r.customer_id
            for r in await connection.execute(
                text("SELECT customer_id FROM customers WHERE customer_id NOT LIKE 'bystander-%'")
            )
        }
        [pseudonym] = pseudonyms
        assert pseudonym.startswith("erased-")
        assert (
            await connection.execute(
                text("SELECT points_balance FROM customers WHERE customer_id = :p"), {"p": pseudonym}
            )
        ).scalar_one() == balance_before
        owners = {
            table: {
                r[0]
                for r in await connection.execute(
                    text(f"SELECT DISTINCT customer_id FROM {table} WHERE customer_id NOT LIKE 'bystander-%'")
                )
            }
            for table in ("events", "awards", "exposures", "first_exposures", "customer_timelines", "points_ledger")
        }
    assert owners == {table: {pseudonym} for table in owners}
    [erased] = await audit(client, keys, action="customer.erased")
    assert erased["subject"] == pseudonym
    assert erased["actor"] == f"key {key_id_of(keys['customers:erase'])}"
    [adjusted] = await audit(client, keys, action="points.adjusted")
    assert adjusted["subject"] == pseudonym
    assert "note" not in adjusted["details"]
    assert adjusted["details"]["points"] == 40

    for export in ("/v1/exports/exposures.csv", "/v1/exports/awards.csv"):
        exported = await client.get(export, headers=keys["reports:read"])
        assert exported.status_code == 200, exported.text
        assert pseudonym in exported.text
        assert not [needle for needle in PERSONAL if needle.lower() in exported.text.lower()], export

    redemptions_after, uplift_after = await reports(client, keys)
    assert redemptions_after == redemptions_before
    # the same figures; only the instant up to which events were counted has moved on
    assert {**uplift_after, "complete_until": None} == {**uplift_before, "complete_until": None}

    bystander = await customer(client, keys, "bystander-1")
    assert bystander["purchase_count"] == 2


async def test_after_erasure_no_retry_of_an_event_tells_whose_it_was_and_none_awards_again(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    await erasure_story(client, keys)
    profile = STORY_PROFILE  # as the story sent it
    original = purchase("ev-a1", ERASED_ID, 150.0, occurred_at="2026-03-01T10:00:00Z", customer=profile)
    complaint = interaction("ev-a5", ERASED_ID, name="complaint", note=f"{FIRST_NAME} {LAST_NAME} was kept waiting")
    await post_event(client, keys, complaint)
    before = await client.post("/v1/events", json=original, headers=keys["events:write"])
    assert before.status_code == 200
    assert before.json()["awards"], "before erasure a replay answers with the event's awards"
    awards_before = await scalar(engine, "SELECT count(*) FROM awards")

    erased = await client.delete(f"/v1/customers/{ERASED_ID}", headers=keys["customers:erase"])
    assert erased.status_code == 204, erased.text

    other_mail = {**original, "customer": {**profile, "email": "someone-else@example.org"}}
    answers = [
        await client.post("/v1/events", json=body, headers=keys["events:write"])
        for body in (original, other_mail, complaint, {**complaint, "attributes": {"note": "another text"}})
    ]
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"event_id": body["event_id"], "duplicate": True, "awards": []})
        for body in (original, other_mail, complaint, complaint)
    ]
    assert await scalar(engine, "SELECT count(*) FROM awards") == awards_before  # never awarded twice
    leaks = {needle: found for needle in PERSONAL if (found := await rows_mentioning(engine, needle))}
    assert leaks == {}, f"personal data left after erasure: {leaks}"
    async with engine.connect() as connection:
        hashes = {
            bytes(r.content_hash)
            for r in await connection.execute(
                text("SELECT content_hash FROM events WHERE event_id IN ('ev-a1', 'ev-a2', 'ev-a3', 'ev-a4', 'ev-a5')")
            )
        }
    assert hashes == {bytes(32)}  # no hash of the original event is left to check a guess against


async def test_erasing_an_unknown_customer_is_a_404(client: Client, keys: dict[str, Any], engine: AsyncEngine) -> None:
    body = assert_problem(await client.delete("/v1/customers/c-never-seen", headers=keys["customers:erase"]), 404)
    assert body["type"] == "urn:delight:problem:not-found"
    assert await audit(client, keys, action="customer.erased") == []


async def test_erasure_needs_the_customers_erase_scope(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("er-s1", "c-keep", 40.0, customer={"first_name": "Keep"}))
    for scope in OTHER_THAN[scopes.CUSTOMERS_ERASE]:
        body = assert_problem(await client.delete("/v1/customers/c-keep", headers=keys[scope]), 403)
        assert "customers:erase" in body["detail"], scope
    assert_problem(await client.delete("/v1/customers/c-keep"), 401)
    assert (await customer(client, keys, "c-keep"))["attributes"] == {"first_name": "Keep"}


# ---------------------------------------------------------------------------------------------------- 6. limits


@pytest.fixture
async def rate_limited(database_url: str, redis_url: str) -> AsyncIterator[Client]:
    async with serving(create_app(settings_with(database_url, redis_url, rate_limit=5))) as limited:
        yield limited


async def fresh_window(margin: float = 4.0) -> None:
    """Wait for the next one-minute window when this one is about to end, so six requests share one."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.05)


async def test_the_sixth_request_in_a_minute_is_a_429_with_retry_after(
    rate_limited: Client, client: Client, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    other = await new_key(sessionmaker, scopes.RULES_ADMIN)
    writer = await new_key(sessionmaker, scopes.EVENTS_WRITE)
    await fresh_window()
    for _ in range(5):
        response = await rate_limited.get("/v1/rules", headers=bearer(key))
        assert response.status_code == 200, response.text
    limited = await rate_limited.get("/v1/rules", headers=bearer(key))
    body = assert_problem(limited, 429)
    assert body["type"] == "urn:delight:problem:rate-limited"
    retry_after = limited.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 61
    assert_problem(await rate_limited.get("/v1/rules", headers=bearer(key)), 429)

    # another key is not affected, nor is the same key on a server without a limit
    assert (await rate_limited.get("/v1/rules", headers=bearer(other))).status_code == 200
    assert (await client.get("/v1/rules", headers=bearer(key))).status_code == 200

    # a limited request does no work
    for i in range(5):
        assert (
            await rate_limited.post("/v1/events", json=interaction(f"rl-{i}"), headers=bearer(writer))
        ).status_code == 201
    assert_problem(await rate_limited.post("/v1/events", json=interaction("rl-5"), headers=bearer(writer)), 429)
    assert await scalar(engine, "SELECT count(*) FROM events") == 5


async def test_requests_with_a_wrong_secret_do_not_use_up_the_keys_limit(
    rate_limited: Client, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The key check counts a request in the same Redis call only when the secret matches the cached key."""
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    key_id = key.split("_")[1]
    forged = f"dlk_{key_id}_{'A' * 43}"
    await fresh_window()
    assert (await rate_limited.get("/v1/rules", headers=bearer(key))).status_code == 200  # now in the shared cache
    for _ in range(8):
        assert_problem(await rate_limited.get("/v1/rules", headers=bearer(forged)), 401)
    for _ in range(4):  # the owner still has the rest of the five
        response = await rate_limited.get("/v1/rules", headers=bearer(key))
        assert response.status_code == 200, response.text
    assert_problem(await rate_limited.get("/v1/rules", headers=bearer(key)), 429)


async def test_rate_limits_degrade_to_none_when_redis_is_unreachable(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], keys: dict[str, Any]
) -> None:
    key = await new_key(sessionmaker, scopes.RULES_ADMIN)
    app = create_app(settings_with(database_url, UNREACHABLE_REDIS, rate_limit=5))
    async with serving(app) as redis_down:
        statuses = [(await redis_down.get("/v1/rules", headers=bearer(key))).status_code for _ in range(8)]
        assert statuses == [200] * 8
        writes = [
            (await redis_down.post("/v1/events", json=interaction(f"rd-{i}"), headers=keys["events:write"])).status_code
            for i in range(7)
        ]
        assert writes == [201] * 7


@pytest.fixture
async def small_bodies(database_url: str, redis_url: str) -> AsyncIterator[Client]:
    async with serving(create_app(settings_with(database_url, redis_url, max_body_bytes=4096))) as small:
        yield small


async def test_a_body_over_max_body_bytes_is_a_413(
    small_bodies: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    event = purchase("big-1", "c-big", 10.0, attributes={f"k{i}": "x" * 90 for i in range(45)})
    response = await small_bodies.post("/v1/events", json=event, headers=keys["events:write"])
    body = assert_problem(response, 413)
    assert body["type"] == "urn:delight:problem:payload-too-large"
    limit = "the request body is over 4,096 bytes, the most this server accepts (DELIGHT_MAX_BODY_BYTES)"
    assert body["detail"] == limit

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while streaming too
        yield b'{"event_id": "big-2", "attributes": {"a": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    streamed = await small_bodies.post(
        "/v1/events", content=chunks(), headers={**keys["events:write"], "Content-Type": "application/json"}
    )
    assert assert_problem(streamed, 413)["detail"] == limit

    small = await small_bodies.post("/v1/events", json=purchase("small-1", "c-big", 10.0), headers=keys["events:write"])
    assert small.status_code == 201, small.text
    assert await scalar(engine, "SELECT count(*) FROM events") == 1


async def test_the_default_body_limit_holds_on_the_standard_app(client: Client, keys: dict[str, Any]) -> None:
    too_big = b'{"event_id": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = await client.post(
        "/v1/events", content=too_big, headers={**keys["events:write"], "Content-Type": "application/json"}
    )
    assert_problem(response, 413)


async def test_a_batch_of_1001_events_is_refused_naming_the_limit(
    client: Client, keys: dict[str, Any], engine: AsyncEngine
) -> None:
    events = [interaction(f"b-{i}", f"c-batch-{i % 7}") for i in range(1001)]
    response = await client.post("/v1/events/batch", json={"events": events}, headers=keys["events:write"])
    body = assert_problem(response, 422)
    assert body["errors"] == [{"field": "events", "message": "at most 1000 items; this has 1001"}], str(body)[:500]
    assert len(response.content) < 1000  # the limit, not the batch echoed back
    assert await scalar(engine, "SELECT count(*) FROM events") == 0


async def test_a_text_too_long_is_refused_naming_the_limit_without_repeating_it(
    client: Client, keys: dict[str, Any]
) -> None:
    event = interaction("b-long", "c-long")
    response = await client.post(
        "/v1/events/batch", json={"events": [{**event, "name": "n" * 5000}]}, headers=keys["events:write"]
    )
    body = assert_problem(response, 422)
    assert body["errors"] == [{"field": "events[0].name", "message": "at most 100 characters; this has 5000"}]
    wrong_type = await client.post("/v1/events/batch", json={"events": "e" * 5000}, headers=keys["events:write"])
    body = assert_problem(wrong_type, 422)
    assert body["errors"] == [{"field": "events", "message": "a text of 5,000 characters is not of type 'array'"}]


# -------------------------------------------------------------------------------------------- 7. property leaks


async def test_a_profile_needs_customers_read(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("leak-1", "c-private", 40.0, customer={"email": "p@example.org"}))
    for scope, path in itertools.product(
        OTHER_THAN[scopes.CUSTOMERS_READ], ("/v1/customers/c-private", "/v1/customers/c-private/points")
    ):
        response = await client.get(path, headers=keys[scope])
        assert_problem(response, 403)
        assert "p@example.org" not in response.text
    assert_problem(await client.get("/v1/customers/c-private"), 401)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"customer": {"points_balance": 1_000_000}}, "customer.points_balance"),
        ({"customer": {"first_name": "Eve", "status": "gold"}}, "customer.status"),
        ({"customer": {"purchase_count": 99, "lifetime_spend": 1e6}}, "customer.purchase_count"),
        ({"points_balance": 1_000_000}, "points_balance"),
        ({"status": "gold"}, "status"),
        ({"purchase_count": 99}, "purchase_count"),
        ({"favourite_category": "gold-bars"}, "favourite_category"),
        ({"profile": {"points_balance": 1_000_000}}, "profile"),
    ],
    ids=[
        "customer.points_balance",
        "customer.status",
        "customer.statistics",
        "points_balance",
        "status",
        "purchase_count",
        "favourite_category",
        "profile",
    ],
)
async def test_event_bodies_cannot_set_the_balance_status_or_statistics(
    client: Client, keys: dict[str, Any], extra: Json, field: str
) -> None:
    await post_event(client, keys, purchase("prop-0", "c-prop", 40.0))
    before = await customer(client, keys, "c-prop")
    event = purchase("prop-1", "c-prop", 40.0, **extra)
    problem = assert_problem(await client.post("/v1/events", json=event, headers=keys["events:write"]), 422)
    assert field in error_fields(problem), problem
    batch = await client.post("/v1/events/batch", json={"events": [event]}, headers=keys["events:write"])
    problem = assert_problem(batch, 422)
    assert f"events[0].{field}" in error_fields(problem), problem
    after = await customer(client, keys, "c-prop")
    for name in ("points_balance", "purchase_count", "lifetime_spend", "favourite_category", "attributes"):
        assert after[name] == before[name], name


async def test_event_attributes_named_like_profile_fields_change_nothing(client: Client, keys: dict[str, Any]) -> None:
    event = purchase(
        "attr-1", "c-attr", 40.0, attributes={"points_balance": 1_000_000, "purchase_count": 99, "status": "gold"}
    )
    await post_event(client, keys, event)
    await post_event(
        client, keys, interaction("attr-2", "c-attr", name="app_opened", points_balance=5000, lifetime_spend=1e6)
    )
    profile = await customer(client, keys, "c-attr")
    assert profile["points_balance"] == 0
    assert profile["purchase_count"] == 1
    assert profile["lifetime_spend"] == 40.0
    assert "status" not in profile
    assert "points_balance" not in profile["attributes"]


async def test_no_endpoint_writes_a_profile_or_credits_points_through_a_spend(
    client: Client, keys: dict[str, Any]
) -> None:
    await post_event(client, keys, purchase("w-1", "c-write", 40.0))
    forged = {"points_balance": 1_000_000, "status": "gold", "purchase_count": 99}
    for method in ("PUT", "PATCH", "POST"):
        response = await client.request(method, "/v1/customers/c-write", json=forged, headers=keys["all"])
        assert response.status_code in (404, 405), (method, response.text)
    for path in ("/v1/customers/c-write/points", "/v1/customers/c-write/points/adjust"):
        response = await client.request("PUT", path, json=forged, headers=keys["all"])
        assert response.status_code in (404, 405), (path, response.text)
    negative = await client.post(
        "/v1/customers/c-write/points/redeem", json={"points": -500, "order_id": "neg-1"}, headers=keys["all"]
    )
    problem = assert_problem(negative, 422)
    assert "points" in error_fields(problem)
    forged_spend = await client.post(
        "/v1/customers/c-write/points/redeem",
        json={"points": 1, "order_id": "neg-2", "points_balance": 1_000_000},
        headers=keys["all"],
    )
    assert_problem(forged_spend, 422)
    profile = await customer(client, keys, "c-write")
    assert (profile["points_balance"], profile["purchase_count"]) == (0, 1)


async def test_metrics_carry_no_customer_ids(client: Client, keys: dict[str, Any]) -> None:
    await post_event(client, keys, purchase("metric-1", "c-metric-secret-7q", 150.0))
    assert (await client.get("/v1/customers/c-metric-secret-7q", headers=keys["customers:read"])).status_code == 200
    assert (await client.get("/v1/customers/c-metric-unknown-7q", headers=keys["customers:read"])).status_code == 404
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "delight_http_requests" in response.text
    assert "metric-secret-7q" not in response.text
    assert "metric-unknown-7q" not in response.text
