"""The baseline ``bench/load.py`` measures Delight against: the least a Litestar service can do per event.

``POST /v1/events`` decodes the JSON body, runs one asyncpg ``INSERT`` of the
event into a table and answers 201: no keys, no rules, no transaction beyond
the statement's own. It runs under the same server, worker count and
PostgreSQL as Delight in the same benchmark run.

    BENCH_PG_DSN=postgresql://... uvicorn --factory baseline_app:create_app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, post

INSERT = "INSERT INTO baseline_events (event_id, customer_id, payload) VALUES ($1, $2, $3)"


@post("/v1/events", status_code=201)
async def record(request: Request[Any, Any, Any], data: dict[str, Any]) -> dict[str, Any]:
    pool: asyncpg.Pool = request.app.state.pool
    await pool.execute(INSERT, data["event_id"], data["customer_id"], msgspec.json.encode(data).decode())
    return {"event_id": data["event_id"], "duplicate": False, "awards": []}


def create_app() -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:  # the pool Delight keeps by default
        app.state.pool = await asyncpg.create_pool(os.environ["BENCH_PG_DSN"], min_size=20, max_size=20)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Litestar(route_handlers=[record], lifespan=[lifespan], openapi_config=None)
