"""The event path's SQL, run on asyncpg directly.

An event costs a few fixed statements; through the ORM session and
SQLAlchemy's statement layer they cost more Python CPU than all the rest of
the request. Here the same statements, written with ``:name`` parameters,
run on a connection checked out of the same pool, in one transaction
(``transaction``) or, for an event that is one statement, in that statement's
own (``pooled``). A parameter written ``CAST(:name AS jsonb)`` is sent as JSON text (the pool's
connections decode JSON with msgspec, see ``db.create_engine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from service.lib.db import json_text

Connection: TypeAlias = asyncpg.Connection
Record: TypeAlias = asyncpg.Record

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_JSON_PARAMETER = re.compile(r"CAST\(:([A-Za-z_]\w*) AS jsonb\)", re.IGNORECASE)


class Sql:
    """One statement: its ``:name`` parameters numbered once, for asyncpg, and as SQLAlchemy ``text``."""

    __slots__ = ("json", "names", "source", "text")

    def __init__(self, source: str) -> None:
        numbers: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

        self.source = source
        self.text = _PARAMETER.sub(number, source)
        self.names = tuple(numbers)
        self.json = frozenset(_JSON_PARAMETER.findall(source))

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [json_text(params[name]) if name in self.json else params[name] for name in self.names]

    def clause(self) -> TextClause:
        """The statement for a SQLAlchemy session, for callers that hold one."""
        return text(self.source).bindparams(*(bindparam(name, type_=JSONB) for name in self.json))

    async def fetch(self, conn: Connection, params: Mapping[str, Any]) -> list[Record]:
        return list(await conn.fetch(self.text, *self.args(params)))

    async def fetchrow(self, conn: Connection, params: Mapping[str, Any]) -> Record | None:
        return await conn.fetchrow(self.text, *self.args(params))

    async def fetchval(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        return await conn.fetchval(self.text, *self.args(params))

    async def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        await conn.execute(self.text, *self.args(params))


# What leaves a connection unusable, as opposed to one statement failing on it.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InterfaceError,  # the connection closed, or an operation cut off on it
    asyncpg.exceptions.InternalClientError,  # the protocol left mid-operation
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


# The event path's statements are short and keyed by ids, and asyncpg prepares each once per connection:
# a generic plan serves them all, where PostgreSQL would otherwise plan every execution afresh (its
# default for a statement whose custom plans look no dearer), which cost as much server CPU as running them.
#
# A generic plan is kept until the next ANALYZE of a table it reads, so one made while a table is a few
# pages long (a new deployment, a table emptied, a new campaign's counters) reads that table by a
# sequential scan, the cheapest way then, and goes on doing so as the table grows. Measured on a new
# deployment whose tables had been analysed empty: 850 events/s fell to 270 within 40 seconds, PostgreSQL
# reading about four million rows a second from each of awards and first_exposures, until autovacuum
# analysed them again.
# Every statement here finds its rows by a key with an index, so sequential scans are ruled out (where no
# index applies, one is still made). ``tests/test_event_plans.py`` checks the plans.
#
# Sent with BEGIN, in the same round trip, and for this transaction only.
BEGIN = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; SET LOCAL jit = off"


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Connection]:
    """A pooled connection in one transaction: committed when the block ends normally, rolled back on any error.

    The connection is taken and given back as ``pooled`` describes.
    """
    async with pooled(engine) as driver:
        await driver.execute(BEGIN)
        try:
            yield driver
        except Exception:
            if not driver.is_closed():
                await driver.execute("ROLLBACK")
            raise
        await driver.execute("COMMIT")


@contextlib.asynccontextmanager
async def pooled(engine: AsyncEngine) -> AsyncIterator[Connection]:
    """A pooled connection outside any transaction: each statement on it commits by itself.

    For work that is one statement, whose own implicit transaction makes it
    whole, this saves the two round trips of ``BEGIN`` and ``COMMIT``.
    PostgreSQL plans such a statement afresh for its first five executions on
    a connection, then keeps a generic plan if that looks no dearer.

    The connection comes straight from the engine's pool (``raw_connection``),
    without the ``AsyncConnection`` around it, which costs twice as much. It
    goes back to the pool only when it is known to be clean: the block ended
    normally, or a statement failed on it (the server rolled that back). A
    connection the server dropped marks every older pooled connection stale
    too, as SQLAlchemy does, so that after a database restart one request
    fails rather than one per pooled connection; a connection whose statement
    was cut off half way (the request cancelled during a round trip) is
    closed, never reused.
    """
    pool = engine.sync_engine.pool
    fairy = await greenlet_spawn(engine.sync_engine.raw_connection)
    driver: Connection = fairy.driver_connection
    clean = False
    try:
        yield driver
        clean = True
    except Exception as exc:
        if isinstance(exc, CONNECTION_LOST) or driver.is_closed():
            # What SQLAlchemy does on a disconnect: every connection older than now is stale.
            pool._invalidate(fairy, exc, _checkin=False)
            raise
        clean = True  # the failed statement, or the transaction around it, was rolled back
        raise
    finally:
        # Back to the pool (or closed) even when the request is cancelled half way.
        if clean and not driver.is_in_transaction():
            if isinstance(pool, QueuePool) and pool.checkedin() < pool.size():
                # The pool has room and the connection needs no reset: checking it in awaits nothing, so it
                # is done here, without a greenlet and a shielded task (a quarter of this block's CPU).
                fairy.close()
            else:  # a connection over the pool's size is closed, which awaits the server
                await asyncio.shield(greenlet_spawn(fairy.close))
        else:
            await asyncio.shield(greenlet_spawn(fairy.invalidate))
