"""The event path's transactions on asyncpg (``service/lib/pg.py``) against the real test database.

A connection goes back to the pool only when it is clean. The engines here
have a pool of one connection, so the next transaction gets the very
connection the previous one left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from service.lib import pg
from service.lib.db import create_engine
from service.lib.settings import DatabaseSettings

TXID = "SELECT txid_current()"


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, DatabaseSettings(pool_size=1, max_overflow=0))
    try:
        yield engine
    finally:
        await engine.dispose()


async def txid(engine: AsyncEngine) -> int:
    async with pg.transaction(engine) as conn:
        return int(await conn.fetchval(TXID))


async def test_each_block_is_a_transaction_of_its_own_that_commits(one_connection: AsyncEngine) -> None:
    first, second = await txid(one_connection), await txid(one_connection)
    assert first != second


async def test_a_failed_statement_rolls_back_and_the_connection_is_reused_clean(one_connection: AsyncEngine) -> None:
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with pg.transaction(one_connection) as conn:
            await conn.execute("SELECT 1 / 0")
    before = await txid(one_connection)
    assert await txid(one_connection) != before  # not nested inside what the failure left open


async def test_connections_go_back_to_the_pool_and_those_over_its_size_are_closed(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked in directly while the pool has room, closed (awaiting the server) once it is full; a close
    attempted where it cannot await would only be logged by the pool, so the log must stay clean."""
    engine = create_engine(database_url, DatabaseSettings(pool_size=2, max_overflow=3))
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    caplog.set_level(logging.WARNING, logger="sqlalchemy.pool")
    try:

        async def hold() -> int:
            async with pg.transaction(engine) as conn:
                await conn.execute("SELECT pg_sleep(0.2)")
                return int(await conn.fetchval(TXID))

        for _ in range(3):
            ids = await asyncio.gather(*(hold() for _ in range(5)))
            assert len(set(ids)) == 5
            assert (pool.checkedout(), pool.checkedin(), pool.overflow()) == (0, 2, 0)
        assert len({await txid(engine) for _ in range(4)}) == 4
    finally:
        await engine.dispose()
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.pool")]


async def test_a_request_cancelled_at_any_point_leaves_no_transaction_open_on_a_pooled_connection(
    one_connection: AsyncEngine,
) -> None:
    """Cancelled while the connection is checked out, while ``BEGIN`` is on its way, while a statement runs:
    whatever the moment, the next transactions are real ones, each with its own id, not savepoints inside a
    transaction the cancelled request left open."""

    async def slow() -> None:
        async with pg.transaction(one_connection) as conn:
            await conn.execute("SELECT pg_sleep(5)")

    for step in range(60):
        task = asyncio.create_task(slow())
        for _ in range(step % 12):  # cancel after a few turns of the event loop...
            await asyncio.sleep(0)
        await asyncio.sleep(0.0005 * (step // 12))  # ...and a little later each round
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        first, second = await txid(one_connection), await txid(one_connection)
        assert first != second, f"step {step}: the pooled connection was left inside a transaction"


async def test_the_event_path_plans_its_statements_once_and_only_inside_its_own_transactions(
    one_connection: AsyncEngine,
) -> None:
    """Generic plans without sequential scans for the event path's prepared statements, set for its
    transaction alone: the same pooled connection, used by anything else afterwards (a report that reads a
    whole table), plans as PostgreSQL normally does."""
    settings = ("plan_cache_mode", "enable_seqscan", "jit")
    async with pg.transaction(one_connection) as conn:
        assert [await conn.fetchval(f"SHOW {name}") for name in settings] == ["force_generic_plan", "off", "off"]
    async with one_connection.connect() as other:
        shown = [(await other.exec_driver_sql(f"SHOW {name}")).scalar() for name in settings[:2]]
    assert shown == ["auto", "on"]
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with pg.transaction(one_connection) as conn:
            await conn.execute("SELECT 1 / 0")
    async with one_connection.connect() as other:
        shown = [(await other.exec_driver_sql(f"SHOW {name}")).scalar() for name in settings[:2]]
    assert shown == ["auto", "on"]


async def test_a_pooled_connection_outside_a_transaction_commits_each_statement_by_itself(
    one_connection: AsyncEngine,
) -> None:
    async with pg.pooled(one_connection) as conn:
        assert not conn.is_in_transaction()
        first, second = int(await conn.fetchval(TXID)), int(await conn.fetchval(TXID))
        assert first != second
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await conn.execute("SELECT 1 / 0")
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with pg.pooled(one_connection) as conn:
            await conn.execute("SELECT 1 / 0")
    before = await txid(one_connection)
    assert await txid(one_connection) != before  # the same connection, reused clean
