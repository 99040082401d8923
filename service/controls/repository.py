"""SQL for the surprise controls."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

RESERVE = text("SELECT delight_reserve(:plan)").bindparams(bindparam("plan", type_=JSONB))

STATE = text(
    """
    SELECT key, sum(n) AS n, sum(cents) AS cents FROM counters
    WHERE key = ANY(:keys)
    GROUP BY key
    """
)


async def reserve(session: AsyncSession, plan: dict[str, Any]) -> list[int]:
    """Draw the counters of one event's candidates in PostgreSQL; the positions of those accepted."""
    return list((await session.execute(RESERVE, {"plan": plan})).scalar_one())


async def usage(session: AsyncSession, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``key -> (units, cents)`` drawn so far from each counter."""
    rows = (await session.execute(STATE, {"keys": keys})).all()
    return {row.key: (int(row.n), int(row.cents)) for row in rows}
