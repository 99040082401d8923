"""The projector inside ``delight serve``: one process at a time applies committed events, the others stand by.

Every worker of every replica runs this loop on a connection of its own. The
one that holds the leader lock (a session advisory lock) applies pages as
events commit; the others try for the lock every ``STANDBY_POLL`` seconds, and
PostgreSQL releases it the moment the leader's connection ends (its process
stopped or killed, its host gone once TCP notices), so another takes over
within a few seconds. The leader applies the next page at once when a page
finished full, ``GATHER`` seconds after one that applied something (so that
under load a page folds in the events of a fraction of a second rather than
one), and ``IDLE_POLL`` seconds after one that found nothing.
Losing the database ends the connection, and the loop starts again once it
is back: a page cut off half way was rolled back, and is applied again whole.
"""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]

from service.lib.db import DATABASE_ERRORS
from service.lib.logging import get_logger
from service.lib.pg import CONNECTION_LOST
from service.lib.tasks import stop_if_cancelled
from service.projection.apply import LEADER_LOCK, NotBuilt, apply_page, batch_lock, build, projector_connection

log = get_logger(__name__)

STANDBY_POLL = 1.0
IDLE_POLL = 0.5
GATHER = 0.1
RETRY = 2.0


async def run_projector(database_url: str) -> None:
    """Apply committed events for as long as the service runs, whenever this process holds the leader lock."""
    while True:
        stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
        try:
            await _serve_while_connected(database_url)
        except (*DATABASE_ERRORS, *CONNECTION_LOST, asyncpg.PostgresError, TimeoutError) as exc:
            stop_if_cancelled()
            log.warning("projector_interrupted", error=type(exc).__name__)
        except Exception:  # a bug: say so loudly, and keep the projection going (its lag shows on /metrics)
            stop_if_cancelled()
            log.exception("projector_failed")
        await asyncio.sleep(RETRY)


async def _serve_while_connected(database_url: str) -> None:
    async with projector_connection(database_url) as conn:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):  # noqa: ASYNC110 - a poll
            await asyncio.sleep(STANDBY_POLL)
        log.info("projector_leading")
        while True:
            stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
            async with batch_lock(conn):
                try:
                    progress = await apply_page(conn)
                except NotBuilt:
                    log.info("projection_building")
                    progress = await build(conn)
                    log.info("projection_built", events=progress.events)
            if not progress.caught_up:
                continue  # a full page: more are waiting
            await asyncio.sleep(GATHER if progress.events else IDLE_POLL)
