"""Applying committed events to the uplift projection: a page at a time, or everything at once.

Whoever applies holds the batch lock (a session advisory lock), so only one
process writes the projection at a time; an erasure takes the same lock for
its transaction, so that no page is half way through a customer it renames.
Each page is one transaction that also moves ``projection_state`` on: a page
that fails (a statement error, the connection lost, PostgreSQL restarting)
leaves the state where it was, and the next attempt applies the same events
again from the start. Events are applied in the order their transactions
became visible, not in event time: every statement folds a page into the
projection whatever the order (``delight_timeline_merge``), so a till's
events from a day ago land where they belong.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from service.lib.db import asyncpg_connect_args
from service.lib.pg import CONNECTION_LOST, Connection
from service.projection import repository as sql

# Session advisory locks; ``service.awards.expiry`` uses 0x64656C65.
LEADER_LOCK = 0x64656C70  # held by the one projector that runs batches on its own, in ``delight serve``
BATCH_LOCK = 0x64656C71  # held while a page or a build is being applied, and by an erasure

PAGE_TRANSACTIONS = 5000  # transactions (almost always one event each) per page
Snapshot = tuple[int, int, tuple[int, ...]]


class NotBuilt(Exception):
    """The projection has never been built (a new or migrated database, or a rebuild asked for)."""


@dataclass(frozen=True, slots=True)
class Progress:
    events: int  # applied by this call
    complete_at: dt.datetime | None  # every event committed before this is in the projection
    caught_up: bool  # the last batch finished: nothing committed before ``complete_at`` is left


@contextlib.asynccontextmanager
async def projector_connection(database_url: str) -> AsyncIterator[Connection]:
    """A connection of its own for applying pages: the leader lock lasts as long as its session."""
    conn = await asyncpg.connect(
        **asyncpg_connect_args(database_url), server_settings={"application_name": "delight-projector"}
    )
    try:
        yield conn
    finally:
        try:
            await asyncio.shield(conn.close(timeout=2))
        except (*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError):
            conn.terminate()


@contextlib.asynccontextmanager
async def batch_lock(conn: Connection) -> AsyncIterator[None]:
    """Hold the batch lock for the block (waiting for whoever has it)."""
    await conn.execute("SELECT pg_advisory_lock($1)", BATCH_LOCK)
    try:
        yield
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", BATCH_LOCK)


# Set for each page's transaction: plans made for the page's own ids, never a generic plan made while a table was
# small (``service.lib.pg`` tells what that did on the event path); and a transaction left open by a process that
# hangs is ended by the server, so that its locks do not hold others up.
PAGE_SETTINGS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL idle_in_transaction_session_timeout = '60s'"


async def apply_page(conn: Connection, limit: int = PAGE_TRANSACTIONS) -> Progress:
    """Apply the next page of committed events; the caller holds the batch lock."""
    async with conn.transaction():
        await conn.execute(PAGE_SETTINGS)
        state = await sql.STATE.fetchrow(conn, {})
        if state is None or state["snapshot"] is None:
            raise NotBuilt
        applied: Snapshot = state["snapshot"]
        target, target_at = state["target"], state["target_at"]
        if target is None:
            now = await sql.NOW.fetchrow(conn, {})
            assert now is not None
            target, target_at = now["snapshot"], now["at"]
        after = state["cursor"] or 0
        page = await sql.NEXT_TRANSACTIONS.fetch(
            conn,
            {
                "in_progress": list(applied[2]),
                "from_xid": applied[1],
                "to_xid": target[1],
                "after": after,
                "target": target,
                "limit": limit,
            },
        )
        transactions = [row["xid"] for row in page]
        rows = await sql.THEIR_EVENTS.fetch(conn, {"xids": transactions}) if transactions else []
        bound = max(transactions, default=after)
        if rows:
            params: dict[str, Any] = {
                "ids": [row["event_id"] for row in rows],
                "first": min(row["occurred_at"] for row in rows),
                "last": max(row["occurred_at"] for row in rows),
                "applied": applied,
                "target": target,
                "bound": bound,
            }
            await sql.PAGE_TIMELINES.execute(conn, params)
            await sql.PAGE_RETURNS.execute(conn, params)
            await sql.PAGE_FIRST_EXPOSURES.execute(conn, params)
            await sql.COSTS.execute(conn, params)
        finished = len(transactions) < limit
        await sql.SAVE.execute(
            conn,
            {
                "snapshot": target if finished else applied,
                "complete_at": target_at if finished else state["complete_at"],
                "target": None if finished else target,
                "target_at": None if finished else target_at,
                "cursor": None if finished else bound,
                "as_of": max((row["occurred_at"] for row in rows), default=None),
                "events": len(rows),
            },
        )
    return Progress(events=len(rows), complete_at=target_at if finished else state["complete_at"], caught_up=finished)


async def apply_page_if_free(conn: Connection) -> Progress | None:
    """Apply the next page (or build) unless another process is applying one; ``None`` when it is."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", BATCH_LOCK):
        return None
    try:
        try:
            return await apply_page(conn)
        except NotBuilt:
            return await build(conn)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", BATCH_LOCK)


async def build(conn: Connection) -> Progress:
    """Build the projection from every stored event, in one snapshot; the caller holds the batch lock.

    What was there is replaced; reports read it until this commits. Events
    committed while this runs are applied by the next page, as the snapshot it
    records leaves them out.
    """
    async with conn.transaction(isolation="repeatable_read"):
        now = await sql.NOW.fetchrow(conn, {})  # the first statement: the transaction's snapshot
        assert now is not None
        await conn.execute(PAGE_SETTINGS)
        await sql.STATE.fetchrow(conn, {})  # its lock first, as a page takes it, then the tables it rebuilds
        await sql.FORGET.execute(conn, {})
        await sql.ALL_TIMELINES.execute(conn, {})
        await sql.ALL_RETURNS.execute(conn, {})
        await sql.ALL_FIRST_EXPOSURES.execute(conn, {"applied": None, "target": None, "bound": None})
        await sql.RESET.execute(conn, {"snapshot": now["snapshot"], "complete_at": now["at"]})
        events = await conn.fetchval("SELECT events FROM projection_state WHERE name = 'uplift'")
    return Progress(events=int(events), complete_at=now["at"], caught_up=True)


async def catch_up(conn: Connection, until: dt.datetime | None = None, page: int = PAGE_TRANSACTIONS) -> Progress:
    """Apply pages (building first if need be) until a batch finishes after ``until`` (after the first batch
    that finishes, if none is given); takes the batch lock for each page, so others can apply in between."""
    total = 0
    while True:
        async with batch_lock(conn):
            try:
                progress = await apply_page(conn, page)
            except NotBuilt:
                progress = await build(conn)
        total += progress.events
        done = progress.caught_up and (until is None or (progress.complete_at and progress.complete_at >= until))
        if done:
            return Progress(events=total, complete_at=progress.complete_at, caught_up=True)


async def rebuild(conn: Connection) -> Progress:
    """Throw the projection away and build it again from the stored events (``delight reports rebuild``)."""
    async with batch_lock(conn):
        return await build(conn)
