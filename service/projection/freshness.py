"""How fresh the projection is, for the reports and ``/metrics``; and bringing it up to what came before a report."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from service.lib import pg
from service.lib.db import DATABASE_ERRORS
from service.lib.logging import get_logger
from service.lib.pg import Sql
from service.projection.apply import apply_page_if_free

log = get_logger(__name__)

# How long a report tries to have every event committed before it applied, before it answers with what is there.
REPORT_WAIT = 5.0
POLL = 0.05

STATE = text(
    """
    SELECT complete_at, as_of, events,
           extract(epoch FROM statement_timestamp() - complete_at)::float8 AS lag
    FROM projection_state WHERE name = 'uplift'
    """
)
NOW = Sql("SELECT pg_current_snapshot()")
# Whether an event committed before :wanted was taken is not in the projection yet: one whose transaction was in
# progress, or had not started, when the projection's own snapshot was taken.
PENDING = Sql(
    """
    SELECT NOT EXISTS (SELECT 1 FROM projection_state WHERE name = 'uplift' AND snapshot IS NOT NULL)
        OR EXISTS (
            SELECT 1
            FROM projection_state p
            CROSS JOIN LATERAL (
                SELECT xid FROM events WHERE xid = ANY(ARRAY(SELECT pg_snapshot_xip(p.snapshot)))
                UNION ALL
                SELECT xid FROM events WHERE xid >= pg_snapshot_xmax(p.snapshot)
            ) AS e
            WHERE p.name = 'uplift' AND pg_visible_in_snapshot(e.xid, CAST(:wanted AS pg_snapshot))
        )
    """
)


@dataclass(frozen=True, slots=True)
class Freshness:
    complete_until: dt.datetime | None
    """Every event committed before this is in the projection; ``None`` until it is first built."""
    as_of: dt.datetime | None
    """The latest event time (``occurred_at``) among the events in it."""
    lag_seconds: float | None
    """How long ago ``complete_until`` was, as the database's clock reads now."""
    events: int


async def freshness(db: AsyncSession | AsyncConnection) -> Freshness:
    row = (await db.execute(STATE)).one_or_none()
    if row is None:
        return Freshness(complete_until=None, as_of=None, lag_seconds=None, events=0)
    return Freshness(
        complete_until=row.complete_at,
        as_of=row.as_of,
        lag_seconds=None if row.lag is None else max(float(row.lag), 0.0),
        events=int(row.events),
    )


async def catch_up_to_now(engine: AsyncEngine, patience: float = REPORT_WAIT) -> None:
    """Bring the projection up to every event committed before this call, trying for ``patience`` seconds.

    Pages are applied here, on a pooled connection, whenever no other process
    is applying one: the projector applies on its own within a second, and
    this spares a report that wait and keeps it right when no projector runs.
    A failure leaves the projection as it was; the report then says how far
    it got.
    """
    deadline = time.monotonic() + patience
    try:
        async with pg.pooled(engine) as conn:
            wanted = await NOW.fetchval(conn, {})
            while await PENDING.fetchval(conn, {"wanted": wanted}) and time.monotonic() < deadline:
                if await apply_page_if_free(conn) is None:
                    await asyncio.sleep(POLL)  # another process is applying a page
    except (*DATABASE_ERRORS, asyncpg.PostgresError) as exc:
        log.warning("projection_catch_up_failed", error=type(exc).__name__)
