"""Where reports read: a hot standby of the primary when ``DELIGHT_REPORTS_DATABASE_URL`` names one, else the primary.

A read on the standby stays exact. Before it, the primary writes a mark into
its WAL in a transaction of its own (a logical message, which needs no table
and no privilege), and the read waits until the standby has replayed that
transaction: everything the primary had committed when the read was asked
for comes before the mark in the WAL, so the read's snapshot holds it. A
standby that has not got there within ``DELIGHT_REPORTS_MAX_LAG_SECONDS`` is
refused (``ReplicaBehindError``), never read.

The mark is a commit rather than the primary's ``pg_current_wal_lsn()``: that
position can fall inside a record the primary has written only in part (the
WAL writer writes whole pages, and a record may go on past the end of one),
and when no commit follows, on a quiet night, the standby never replays up to
it. Committing the mark flushes the WAL up to it (within ``wal_writer_delay``
under ``synchronous_commit = off``), and the mark is known replayed once its
transaction is visible in a snapshot on the standby, whatever lies after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.lib import pg
from service.lib.db import create_engine, create_sessionmaker
from service.lib.errors import ReplicaBehindError, ServiceUnavailableError
from service.lib.logging import get_logger
from service.lib.settings import DatabaseSettings

log = get_logger(__name__)

# The server's identity comes with each side's answer: a URL that names some other server's standby is refused.
SYSTEM = "(SELECT system_identifier FROM pg_control_system())"
MARK = f"SELECT pg_current_xact_id() AS xid, pg_logical_emit_message(true, 'delight-reports', ''), {SYSTEM} AS system"
WRITTEN = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8"
REPLAYED = f"""
    SELECT pg_is_in_recovery() AS standby, {SYSTEM} AS system,
           pg_visible_in_snapshot($1::xid8, pg_current_snapshot()) AS replayed,
           pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8 AS lsn
"""
FIRST_POLL = 0.002
LAST_POLL = 0.1

S = TypeVar("S", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class ReplicaLag:
    """How far behind the standby was when a read asked it for what the primary had committed."""

    seconds: float
    """How long the read waited for the standby to replay it; 0 when it already had."""
    bytes: int
    """The WAL it had still to replay then."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A transaction committed on the primary for a read to wait for."""

    xid: int
    written: int
    """How far the primary had written its WAL once the mark committed, in bytes: what the standby must replay."""
    system: int
    """The primary's ``system_identifier``, which its standbys share."""


@dataclass(frozen=True, slots=True)
class ReportsDatabase:
    """The engine and sessions reports read through, and the primary whose commits they must hold.

    Without a standby both engines are the primary's and ``caught_up`` costs
    nothing, so callers never ask which one they have.
    """

    primary: AsyncEngine
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    max_lag: float

    @property
    def on_replica(self) -> bool:
        return self.engine is not self.primary

    async def caught_up(self) -> ReplicaLag | None:
        """Once the standby holds everything the primary had committed before this call: how far behind it was.

        ``None`` when reports read the primary itself; ``ReplicaBehindError`` when the standby has not caught
        up within ``max_lag`` seconds, ``ServiceUnavailableError`` when it is not a standby of the primary.
        """
        if not self.on_replica:
            return None
        mark = await self._mark()
        async with pg.pooled(self.engine) as conn:
            return await self._replayed(conn, mark)

    async def _mark(self) -> Mark:
        """Commit a mark on the primary."""
        async with pg.pooled(self.primary) as conn:
            async with conn.transaction():
                row = await conn.fetchrow(MARK)
            written: int = await conn.fetchval(WRITTEN)
        return Mark(xid=row["xid"], written=written, system=row["system"])

    async def _replayed(self, conn: pg.Connection, mark: Mark) -> ReplicaLag:
        """Poll the standby until it has replayed ``mark``, for ``max_lag`` seconds at most."""
        started = time.monotonic()
        poll, behind = FIRST_POLL, None
        while True:
            row = await conn.fetchrow(REPLAYED, mark.xid)
            if not row["standby"] or row["system"] != mark.system:
                log.error("reports_database_not_a_standby", in_recovery=row["standby"])
                raise ServiceUnavailableError(
                    "the reports database (DELIGHT_REPORTS_DATABASE_URL) is not a standby of the primary "
                    "(DELIGHT_DATABASE_URL), or no longer one; reports are not read from it"
                )
            waited = time.monotonic() - started
            if behind is None:
                if row["replayed"]:
                    return ReplicaLag(seconds=0.0, bytes=0)
                behind = max(mark.written - row["lsn"], 0)
            if row["replayed"]:
                return ReplicaLag(seconds=round(waited, 3), bytes=behind)
            if waited >= self.max_lag:
                raise _behind(max(mark.written - row["lsn"], 0), waited, self.max_lag)
            await asyncio.sleep(min(poll, self.max_lag - waited))
            poll = min(poll * 2, LAST_POLL)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session on the database reports read, once it holds what the primary had committed before."""
        await self.caught_up()
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def close(self) -> None:
        if self.on_replica:
            await self.engine.dispose()


def _behind(lag_bytes: int, waited: float, limit: float) -> ReplicaBehindError:
    log.warning("reports_replica_behind", lag_bytes=lag_bytes, waited=round(waited, 3), limit=limit)
    return ReplicaBehindError(
        f"the reports replica is {lag_bytes:,} bytes of WAL behind the primary and had not caught up after "
        f"{waited:.1f} s, the most a read waits (DELIGHT_REPORTS_MAX_LAG_SECONDS = {limit:g}); its figures would "
        "leave out what the primary has committed since, so none are given"
    )


def reports_database(
    primary: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], settings: DatabaseSettings
) -> ReportsDatabase:
    """The standby ``settings.reports_url`` names, or the primary's own engine and sessions when it names none."""
    if settings.reports_url is None:
        return ReportsDatabase(primary, primary, sessionmaker, settings.reports_max_lag)
    engine = create_engine(settings.reports_url, settings)
    return ReportsDatabase(primary, engine, create_sessionmaker(engine), settings.reports_max_lag)


def with_lag(report: S, lag: ReplicaLag | None) -> S:
    """``report`` (with ``replica_lag_seconds`` and ``replica_lag_bytes`` fields) saying how far behind the standby
    it was read on was; as it is when it was read on the primary."""
    if lag is None:
        return report
    fields: dict[str, Any] = {"replica_lag_seconds": lag.seconds, "replica_lag_bytes": lag.bytes}
    return msgspec.structs.replace(report, **fields)
