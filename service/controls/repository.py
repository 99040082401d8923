"""SQL for the surprise controls."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

STATE = text(
    """
    SELECT key, sum(n) AS n, sum(cents) AS cents FROM counters
    WHERE key = ANY(:keys)
    GROUP BY key
    """
)


async def usage(session: AsyncSession, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``key -> (units, cents)`` drawn so far from each counter."""
    rows = (await session.execute(STATE, {"keys": keys})).all()
    return {row.key: (int(row.n), int(row.cents)) for row in rows}
