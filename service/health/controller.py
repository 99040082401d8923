"""``/health/live`` and ``/health/ready``."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from litestar import Controller, Request, Response, get
from msgspec import Struct
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.lib.db import DATABASE_ERRORS
from service.lib.openapi import response
from service.lib.redis import SentinelMaster, sentinel_master, shown

CHECK_TIMEOUT = 2.0


class Live(Struct):
    status: Literal["ok"]


class RedisMaster(Struct):
    """The Redis master as the Sentinels name it (with a ``redis+sentinel://`` URL), and what this worker saw of it."""

    service: str
    """The name the Sentinels monitor the master by."""
    master: str | None
    """``host:port`` of the master the Sentinels name now; ``null`` when none does (none answers, or the master is
    down and no replica has been promoted yet)."""
    problem: str | None
    """Why no master is named; ``null`` when one is."""
    failovers: int
    """Changes of master this worker has seen since it started."""
    previous: str | None
    """The master before the last change it saw."""
    changed_at: str | None
    """When it saw the last change (ISO 8601)."""


class Ready(Struct, omit_defaults=True):
    status: Literal["ready", "degraded", "unavailable"]
    database: str
    redis: str
    rules: str
    sentinel: RedisMaster | None = None
    """Only with a Sentinel URL."""


class HealthController(Controller):
    path = "/health"
    tags = ["operations"]

    @get("/live", operation_id="getLiveness", summary="The process is up")
    async def live(self) -> Live:
        return Live(status="ok")

    @get(
        "/ready",
        operation_id="getReadiness",
        summary="Database reachable and rules loaded (200); Redis down is 200 'degraded'",
        description=(
            "503 when the database cannot be reached or no rules are loaded: this replica cannot serve. Without "
            "Redis it still records events correctly (PostgreSQL is the truth), so it stays in rotation and says "
            "`degraded`: rate limits are not enforced and key checks and rule reloads go to the database. With a "
            "`redis+sentinel://` URL, `sentinel` says which master the Sentinels name now (none while a failover is "
            "under way) and the changes of master this worker has seen."
        ),
        responses={503: response(Ready, "Not ready: the fields say which dependency is missing.")},
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Ready]:
        state = request.app.state
        master = sentinel_master(state.redis)
        database, redis, sentinel = await asyncio.gather(
            _check_database(state.engine), _check_redis(state.redis), _check_sentinel(master)
        )
        registry = state.get("registry")
        rules = registry.current.version if registry is not None else "not loaded"
        ok = database == "ok" and registry is not None
        status: Literal["ready", "degraded", "unavailable"] = "unavailable"
        if ok:
            status = "ready" if redis == "ok" else "degraded"
        body = Ready(status=status, database=database, redis=redis, rules=rules, sentinel=sentinel)
        return Response(body, status_code=200 if ok else 503)


_UNREACHABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, TimeoutError)


async def _check_database(engine: AsyncEngine) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return "ok"
    except _UNREACHABLE as exc:
        return f"unreachable ({type(exc).__name__})"


async def _check_redis(redis: Redis) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await redis.ping()
        return "ok"
    except (RedisError, OSError, TimeoutError) as exc:
        return f"unreachable ({type(exc).__name__})"


async def _check_sentinel(master: SentinelMaster | None) -> RedisMaster | None:
    if master is None:
        return None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            address, problem = await master.ask()
    except TimeoutError:
        address, problem = None, f"no Sentinel answered within {CHECK_TIMEOUT} s"
    return RedisMaster(
        service=master.service,
        master=address,
        problem=problem,
        failovers=master.failovers,
        previous=shown(master.previous) if master.previous is not None else None,
        changed_at=master.changed_at.isoformat() if master.changed_at is not None else None,
    )
