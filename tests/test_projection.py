"""The uplift projection: built from committed events outside the till's transaction, exactly once each.

Every test runs against the real PostgreSQL with the service's own projector
running (the session's app, and the apps tests start), and checks the
projection it left against a rebuild from the stored events. The hard cases
are made to happen, not hoped for: a till's transaction held open while later
ones commit, a page cut off half way by its connection ending, the leader's
connection ended while events keep coming, an erasure while a customer's
events wait to be applied.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.events.schemas import EventIn
from service.events.service import record_event, won_draws
from service.lib import pg
from service.lib.db import asyncpg_connect_args, create_sessionmaker
from service.projection.apply import BATCH_LOCK, LEADER_LOCK, catch_up, projector_connection
from service.projection.freshness import catch_up_to_now, freshness
from service.projection.worker import STANDBY_POLL
from service.reports.uplift import uplift_report
from service.rules.loader import load_rule_set
from tests.conftest import (
    TEST_RULES,
    make_settings,
    post_all,
    projected,
    purchase,
    rebuilt,
    scratch_database,
    serving,
)

Client = AsyncTestClient[Litestar]
DELIGHT = str(Path(sys.executable).parent / "delight")
BASE = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(hours: float) -> str:
    return (BASE + dt.timedelta(hours=hours)).isoformat()


async def connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**asyncpg_connect_args(database_url))


async def applied_events(database_url: str) -> int:
    conn = await connect(database_url)
    try:
        return int(await conn.fetchval("SELECT events FROM projection_state WHERE name = 'uplift'") or 0)
    finally:
        await conn.close()


async def stored_events(engine: AsyncEngine) -> int:
    async with pg.pooled(engine) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events"))


async def test_a_till_transaction_that_commits_after_later_ones_is_applied_once_when_it_commits(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    rule_set = load_rule_set(TEST_RULES)
    await post_all(client, keys, [purchase("first", "c-first", 150.0, occurred_at=at(-1))])  # the mug's stock counter
    held = msgspec.json.decode(json.dumps(purchase("held", "c-held", 150.0, occurred_at=at(0))), type=EventIn)
    async with asyncio.timeout(30), pg.transaction(engine) as till:  # a till's transaction, not committed yet
        await record_event(till, rule_set, held, won_draws(rule_set, held), 0.0)
        later = [purchase(f"later-{i}", f"c-{i}", 150.0, occurred_at=at(1 + i)) for i in range(6)]
        assert len(await post_all(client, keys, later)) == 6  # a mug each, committed while ``held`` is open
        during = await projected(database_url)
    after = await projected(database_url)

    assert "c-held" not in during.timelines
    assert {r["customer_id"] for r in during.firsts} == {"c-first"} | {f"c-{i}" for i in range(6)}
    assert after.timelines["c-held"] == [(BASE, 15000)]
    assert {r["customer_id"] for r in after.firsts} == {"c-first", "c-held"} | {f"c-{i}" for i in range(6)}
    assert await rebuilt(database_url) == after
    assert await applied_events(database_url) == await stored_events(engine) == 8


async def test_a_page_cut_off_half_way_is_rolled_back_and_applied_again_whole(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    await post_all(client, keys, [purchase(f"a-{i}", f"c-{i % 4}", 120.0, occurred_at=at(i)) for i in range(8)])
    await projected(database_url)
    blocker = await connect(database_url)
    try:
        async with blocker.transaction():
            # The next page stops at this customer's timeline, half way through its statements.
            await blocker.execute("SELECT 1 FROM customer_timelines WHERE customer_id = 'c-0' FOR UPDATE")
            await post_all(
                client, keys, [purchase(f"b-{i}", f"c-{i % 4}", 40.0, occurred_at=at(20 + i)) for i in range(8)]
            )
            stuck = None
            async with asyncio.timeout(15):
                while stuck is None:
                    await asyncio.sleep(0.05)
                    stuck = await blocker.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'delight-projector' "
                        "AND wait_event_type = 'Lock'"
                    )
            # As if PostgreSQL had gone away under it: the page's connection ends mid-transaction.
            assert await blocker.fetchval("SELECT pg_terminate_backend($1)", stuck)
    finally:
        await blocker.close()
    after = await projected(database_url)

    assert await rebuilt(database_url) == after
    assert await applied_events(database_url) == await stored_events(engine) == 16
    for i in range(4):  # every purchase counted once: two of 120.00 and two of 40.00 each
        assert after.timelines[f"c-{i}"][-1][1] == 2 * 12000 + 2 * 4000


async def leader(conn: asyncpg.Connection) -> int | None:
    """The backend holding the leader lock, if one does."""
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1 AND objid = $2 AND objsubid = 1",
        LEADER_LOCK >> 32,
        LEADER_LOCK & 0xFFFFFFFF,
    )
    return pid


async def test_another_projector_takes_over_within_seconds_when_the_leader_goes(
    client: Client, keys: dict[str, Any], database_url: str, redis_url: str
) -> None:
    watcher = await connect(database_url)
    replicas = [create_app(make_settings(database_url, redis_url)) for _ in range(2)]
    try:
        # two more replicas, their projectors standing by beside the leader
        async with serving(replicas[0]) as first, serving(replicas[1]) as second:
            first_leader = await leader(watcher)
            assert first_leader is not None
            await post_all(first, keys, [purchase(f"x-{i}", f"c-{i}", 20.0, occurred_at=at(i)) for i in range(4)])
            assert await watcher.fetchval("SELECT pg_terminate_backend($1)", first_leader)
            gone = time.monotonic()
            await post_all(second, keys, [purchase(f"y-{i}", f"c-{i}", 30.0, occurred_at=at(9 + i)) for i in range(4)])
            async with asyncio.timeout(STANDBY_POLL + 8):
                while await applied_events(database_url) < 8:  # noqa: ASYNC110 - applied by a projector, not this test
                    await asyncio.sleep(0.05)
            took_over = time.monotonic() - gone
            second_leader = await leader(watcher)
    finally:
        await watcher.close()
    assert second_leader is not None
    assert second_leader != first_leader
    assert took_over < STANDBY_POLL + 3, took_over
    assert await rebuilt(database_url) == await projected(database_url)


async def test_an_erasure_while_the_customers_events_wait_leaves_no_trace_of_their_id_in_the_projection(
    client: Client, keys: dict[str, Any], database_url: str
) -> None:
    holder = await connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", BATCH_LOCK)  # no projector applies anything for now
        events = [purchase(f"p-{i}", "ana-pending", 130.0, occurred_at=at(i)) for i in range(3)]
        events[0]["customer"] = {"first_name": "Ana"}
        await post_all(client, keys, events)
        erasing = asyncio.create_task(client.delete("/v1/customers/ana-pending", headers=keys["customers:erase"]))
        await asyncio.sleep(0.3)  # the erasure waits for the projection's lock, holding the customer's row
        await holder.execute("SELECT pg_advisory_unlock($1)", BATCH_LOCK)
        assert (await erasing).status_code == 204
    finally:
        await holder.close()
    after = await projected(database_url)

    owners = {r["customer_id"] for r in after.firsts} | set(after.timelines)
    assert "ana-pending" not in owners
    [pseudonym] = owners
    assert pseudonym.startswith("erased-")
    assert after.timelines[pseudonym][-1][1] == 3 * 13000
    assert await rebuilt(database_url) == after


async def test_a_report_counts_what_committed_before_it_and_says_so_when_it_cannot(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    sessions = create_sessionmaker(engine)
    await post_all(client, keys, [purchase(f"r-{i}", f"c-{i}", 150.0, occurred_at=at(i)) for i in range(3)])
    posted = dt.datetime.now(dt.UTC)
    await catch_up_to_now(engine)
    async with sessions() as session:
        waited = await freshness(session)
    assert waited.complete_until is not None
    assert waited.complete_until >= posted - dt.timedelta(seconds=1)  # the database's clock, not this process's
    assert waited.as_of == BASE + dt.timedelta(hours=2)

    holder = await connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", BATCH_LOCK)  # the projection cannot move
        await post_all(client, keys, [purchase("late", "c-late", 150.0, occurred_at=at(30))])
        started = time.monotonic()
        await catch_up_to_now(engine, patience=0.5)
        patience = time.monotonic() - started
        async with sessions() as session:
            stale = await freshness(session)
        async with sessions() as session, session.begin():
            report = await uplift_report(session, campaign="loyal", window_days=1, holdout=None, currency="EUR")
    finally:
        await holder.close()
    assert 0.5 <= patience < 3
    assert stale.complete_until == report.complete_until
    assert report.complete_until is not None
    assert report.complete_until < dt.datetime.now(dt.UTC)
    assert report.as_of == BASE + dt.timedelta(hours=2)  # the late purchase is not in it yet
    assert (await projected(database_url)).timelines["c-late"] == [(BASE + dt.timedelta(hours=30), 15000)]


async def test_metrics_show_the_projections_lag(client: Client, keys: dict[str, Any]) -> None:
    await post_all(client, keys, [purchase("m-1", "c-1", 150.0, occurred_at=at(0))])
    await client.get("/v1/reports/uplift?campaign=loyal", headers=keys["reports:read"])
    body = (await client.get("/metrics")).text
    [lag] = [line for line in body.splitlines() if line.startswith("delight_projection_lag_seconds ")]
    assert 0 <= float(lag.split()[1]) < 5
    [applied] = [line for line in body.splitlines() if line.startswith("delight_projection_events ")]
    assert float(applied.split()[1]) >= 1


async def delight(*args: str, database_url: str) -> tuple[int, str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("DELIGHT_")}
    env |= {"DELIGHT_DATABASE_URL": database_url, "DELIGHT_RULES_DIR": str(TEST_RULES), "DELIGHT_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        DELIGHT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_reports_rebuild_and_jobs_run_from_the_command_line_give_the_projection_the_service_built(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    await post_all(client, keys, [purchase(f"c-{i}", f"c-{i % 3}", 150.0, occurred_at=at(i)) for i in range(9)])
    built = await projected(database_url)
    code, out, err = await delight("reports", "rebuild", database_url=database_url)
    assert code == 0, err
    assert "Rebuilt the uplift projection from 9 stored events" in out
    assert await projected(database_url) == built

    holder = await connect(database_url)
    try:  # a purchase the running service's projector cannot apply: ``jobs run`` does, once the lock is free
        await holder.execute("SELECT pg_advisory_lock($1)", BATCH_LOCK)
        await post_all(client, keys, [purchase("c-9", "c-new", 150.0, occurred_at=at(9))])
        running = asyncio.create_task(delight("jobs", "run", database_url=database_url))
        await asyncio.sleep(0.5)
        await holder.execute("SELECT pg_advisory_unlock($1)", BATCH_LOCK)
        code, out, err = await running
    finally:
        await holder.close()
    assert code == 0, err
    ran = json.loads(out.strip().splitlines()[-1])
    assert ran["projection_complete_until"] is not None
    assert await applied_events(database_url) == await stored_events(engine) == 10
    assert (await projected(database_url)).timelines["c-new"] == [(BASE + dt.timedelta(hours=9), 15000)]


async def test_catching_up_applies_a_backlog_in_pages_of_whole_transactions(
    client: Client, keys: dict[str, Any], engine: AsyncEngine, database_url: str
) -> None:
    async with projector_connection(database_url) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", BATCH_LOCK)  # the service's projectors wait meanwhile
        try:
            await post_all(
                client, keys, [purchase(f"k-{i}", f"c-{i % 7}", 101.0, occurred_at=at(i)) for i in range(40)]
            )
            progress = await catch_up(conn, page=3)  # 40 transactions, a page of 3 at a time (the lock is reentrant)
            state = await conn.fetchrow("SELECT target, cursor, events FROM projection_state")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", BATCH_LOCK)
    assert progress.caught_up
    assert progress.events == 40
    assert (state["target"], state["cursor"], state["events"]) == (None, None, 40)
    after = await projected(database_url)
    assert await rebuilt(database_url) == after
    assert await stored_events(engine) == 40
    assert sum(customer[-1][1] for customer in after.timelines.values()) == 40 * 10100


async def test_a_page_reads_its_events_by_their_transactions_however_many_one_bulk_load_wrote(
    server_urls: tuple[str, str],
) -> None:
    # Statistics that say one transaction wrote nearly every event (a history loaded in bulk) once made the page's
    # read of its events a scan of every partition, for every page.
    async with scratch_database(server_urls[0], "delight_bulk") as url, projector_connection(url) as conn:
        await conn.execute("SELECT delight_month_partition('events', DATE '2025-06-01')")
        await conn.execute(
            """
            INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, channel, order_id, amount,
                                rule_set_version, payload)
            SELECT 'bulk-' || g, sha256(('bulk-' || g)::bytea), 'purchase', 'c-' || g % 500,
                   timestamptz '2025-06-01' + g * interval '1 minute', 'pos', 'o-bulk-' || g, 20, 'bulk', '{}'
            FROM generate_series(1, 20000) AS g
            """
        )
        await conn.execute("ANALYZE events")
        await catch_up(conn)  # builds the projection
        for i in range(5):  # five tills' transactions, one event each
            await conn.execute(
                """
                INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, channel, order_id,
                                    amount, rule_set_version, payload)
                VALUES ($1::text, sha256($1::text::bytea), 'purchase', 'c-1',
                        timestamptz '2025-06-30 12:00' + $2 * interval '1 minute', 'pos', 'o-' || $1, 30, 'bulk', '{}')
                """,
                f"till-{i}",
                i,
            )
        scans = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'events_2025_06'"
        await conn.execute("SELECT pg_stat_force_next_flush()")
        before = await conn.fetchval(scans)

        progress = await catch_up(conn)
        await conn.execute("SELECT pg_stat_force_next_flush()")
        after = await conn.fetchval(scans)

    assert progress.events == 5
    assert after == before
