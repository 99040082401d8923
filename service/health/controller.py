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

CHECK_TIMEOUT = 2.0


class Live(Struct):
    status: Literal["ok"]


class Ready(Struct):
    status: Literal["ready", "degraded", "unavailable"]
    database: str
    redis: str
    rules: str


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
            "`degraded`: rate limits are not enforced and key checks and rule reloads go to the database."
        ),
        responses={503: response(Ready, "Not ready: the fields say which dependency is missing.")},
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Ready]:
        state = request.app.state
        database, redis = await asyncio.gather(_check_database(state.engine), _check_redis(state.redis))
        registry = state.get("registry")
        rules = registry.current.version if registry is not None else "not loaded"
        ok = database == "ok" and registry is not None
        status: Literal["ready", "degraded", "unavailable"] = "unavailable"
        if ok:
            status = "ready" if redis == "ok" else "degraded"
        body = Ready(status=status, database=database, redis=redis, rules=rules)
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
