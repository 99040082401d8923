"""SQL for the surprise controls."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.lib.pg import Connection, Sql

RESERVE = Sql("SELECT delight_reserve(CAST(:plan AS jsonb))")

STATE = text(
    """
    SELECT key, sum(n) AS n, sum(cents) AS cents FROM counters
    WHERE key = ANY(:keys)
    GROUP BY key
    """
)


async def reserve(conn: Connection, plan: dict[str, Any]) -> list[int]:
    """Draw the counters of one event's candidates in PostgreSQL; the positions of those accepted."""
    return list(await RESERVE.fetchval(conn, {"plan": plan}))


async def usage(session: AsyncSession, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``key -> (units, cents)`` drawn so far from each counter."""
    rows = (await session.execute(STATE, {"keys": keys})).all()
    return {row.key: (int(row.n), int(row.cents)) for row in rows}
