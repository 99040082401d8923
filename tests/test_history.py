"""History that ages well: the monthly partitions, retention, and the migration that brings them to a filled database.

Events, exposures and the points ledger are partitioned by month of
``occurred_at`` (migration 0022); ``event_ids`` keeps an event's id unique
across them. A retry is recognised for as long as the event is kept: always,
with no retention; with ``DELIGHT_RETENTION_DAYS``, an event older than the
retention is refused, so the ids that archiving drops are never needed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import create_app
from service.events.history import MONTHS_AHEAD, first_of_month, keep_history
from service.lib.db import (
    alembic_config,
    asyncpg_connect_args,
    create_engine,
    create_sessionmaker,
    upgrade_database_async,
)
from tests.conftest import (
    a_return,
    make_settings,
    new_key,
    post_all,
    projected,
    purchase,
    rebuilt,
    scratch_database,
    serving,
)

# What must come through a migration and an archive unchanged: every row's figures, table by table.
FIGURES = {
    "events": "SELECT count(*), sum(amount), count(DISTINCT event_id), min(occurred_at), max(occurred_at) FROM events",
    "exposures": "SELECT count(*), count(award_id), count(*) FILTER (WHERE \"group\" = 'control') FROM exposures",
    "points_ledger": "SELECT count(*), sum(delta), min(entry_id), max(entry_id) FROM points_ledger",
    "awards": "SELECT count(*), sum(cost), count(*) FILTER (WHERE status = 'reversed') FROM awards",
    "customers": "SELECT count(*), sum(points_balance), sum(lifetime_spend) FROM customers",
}
KIND = (
    "SELECT relname, relkind::text AS relkind FROM pg_class WHERE relname IN ('events', 'exposures', 'points_ledger')"
)


async def figures(url: str) -> dict[str, tuple[Any, ...]]:
    conn = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        return {table: tuple(await conn.fetchrow(sql)) for table, sql in FIGURES.items()}
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
async def fresh_database(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A database of this test's own, migrated to the head: what a test does to its partitions stays there."""
    async with scratch_database(server_urls[0], "delight_history") as url:
        yield url


def app_for(url: str, redis_url: str, retention_days: int = 0) -> Litestar:
    settings = make_settings(url, redis_url)
    return create_app(
        dataclasses.replace(settings, app=dataclasses.replace(settings.app, retention_days=retention_days))
    )


async def keys_for(url: str) -> dict[str, dict[str, str]]:
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        scopes = ("events:write", "awards:redeem")
        return {s: {"Authorization": f"Bearer {await new_key(sessions, s)}"} for s in scopes}
    finally:
        await engine.dispose()


async def run_history(url: str, now: dt.datetime, retention_days: int = 0) -> Any:
    engine = create_engine(url)
    try:
        return await keep_history(engine, now, retention_days)
    finally:
        await engine.dispose()


def history(months: int = 4) -> list[dict[str, Any]]:
    """Purchases over ``months`` months of 2026 by a few customers: mugs, points on the third, a month apart."""
    return [
        purchase(f"h-{m}-{c}", f"hc-{c}", 150.0 + c, occurred_at=f"2026-{m + 1:02d}-{10 + c:02d}T10:00:00Z")
        for m in range(months)
        for c in range(5)
    ]


async def test_the_history_tables_are_partitioned_by_month_with_a_default(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        kinds = dict((await connection.exec_driver_sql(KIND)).all())
        parts = {
            name
            for (name,) in await connection.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            )
        }
    assert kinds == {"events": "p", "exposures": "p", "points_ledger": "p"}
    now = dt.datetime.now(dt.UTC)
    this_month = f"events_{now:%Y_%m}"
    assert {"events_default", this_month} <= parts


async def test_a_retry_is_recognised_across_a_partition_boundary(fresh_database: str, redis_url: str) -> None:
    """An event stored before its month had a partition (in the default one), moved by the jobs into the month
    made for it, is still the same event: the exact retry replays its awards, a changed one (into the next
    month) is a conflict."""
    keys = await keys_for(fresh_database)
    last_instant = purchase("edge-1", "edge-c", 150.0, occurred_at="2026-05-31T23:59:59Z")
    next_month = {**last_instant, "occurred_at": "2026-06-01T00:00:00Z"}
    home = "SELECT tableoid::regclass::text AS t FROM events WHERE event_id = 'edge-1'"
    async with serving(app_for(fresh_database, redis_url)) as client:
        first = await client.post("/v1/events", json=last_instant, headers=keys["events:write"])
        assert first.status_code == 201
        assert first.json()["awards"]
        # a till whose clock is centuries off: its event is kept, in the default partition, and makes no month
        far = purchase("far-1", "edge-c", 5.0, occurred_at="2999-01-01T00:00:00Z")
        assert (await client.post("/v1/events", json=far, headers=keys["events:write"])).status_code == 201
        (where,) = await fetch(fresh_database, home)
        waiting = (await client.get("/metrics")).text
        report = await run_history(fresh_database, dt.datetime.now(dt.UTC))
        (moved,) = await fetch(fresh_database, home)
        settled = (await client.get("/metrics")).text
        again = await client.post("/v1/events", json=last_instant, headers=keys["events:write"])
        changed = await client.post("/v1/events", json=next_month, headers=keys["events:write"])
    assert {"events_2026_05", "exposures_2026_05"} <= set(report.partitions_made)
    assert not [made for made in report.partitions_made if "2999" in made]
    assert report.unfinished is None
    assert (where["t"], moved["t"]) == ("events_default", "events_2026_05")
    # what an operator sees: a row waiting for its month, then none; three months made ahead throughout
    assert 'delight_history_default_rows{table="events"} 1\n' in waiting
    assert 'delight_history_default_rows{table="events"} 0\n' in settled
    assert 'delight_history_months_ahead{table="points_ledger"} 3\n' in settled
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert changed.status_code == 409, changed.text
    rows = await fetch(fresh_database, "SELECT count(*) AS n FROM events WHERE event_id = 'edge-1'")
    assert rows[0]["n"] == 1


async def test_an_event_older_than_the_retention_is_refused_by_name(fresh_database: str, redis_url: str) -> None:
    keys = await keys_for(fresh_database)
    now = dt.datetime.now(dt.UTC)
    old = purchase("too-old", "r-1", 150.0, occurred_at=(now - dt.timedelta(days=31)).isoformat())
    recent = purchase("recent", "r-1", 150.0, occurred_at=(now - dt.timedelta(days=29)).isoformat())
    async with serving(app_for(fresh_database, redis_url, retention_days=30)) as client:
        refused = await client.post("/v1/events", json=old, headers=keys["events:write"])
        batch = await client.post("/v1/events/batch", json={"events": [old, recent]}, headers=keys["events:write"])
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["errors"] == [
        {"field": "occurred_at", "message": "is older than the retention of 30 days (DELIGHT_RETENTION_DAYS)"}
    ]
    assert [r["status"] for r in batch.json()["results"]] == [422, 201]
    stored = await fetch(fresh_database, "SELECT event_id FROM events UNION ALL SELECT event_id FROM event_ids")
    assert sorted(r["event_id"] for r in stored) == ["recent", "recent"]


async def test_retention_archives_old_months_payloads_and_ids_and_keeps_every_figure(
    fresh_database: str, redis_url: str
) -> None:
    keys = await keys_for(fresh_database)
    now = dt.datetime.now(dt.UTC)
    recent = purchase("h-recent", "hc-0", 160.0, occurred_at=(now - dt.timedelta(days=1)).isoformat())
    async with serving(app_for(fresh_database, redis_url)) as client:
        await post_all(client, keys, [*history(), recent])
        returned = a_return("h-back", "hc-1", "o-h-1-1", 151.0, "2026-02-12T10:00:00Z")
        assert (await client.post("/v1/events", json=returned, headers=keys["events:write"])).status_code == 201
    before = await figures(fresh_database)
    projection = await projected(fresh_database)

    report = await run_history(fresh_database, now, retention_days=30)
    assert sorted(report.months_archived) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert sum(report.months_archived.values()) == 21  # 20 purchases and the return
    assert await figures(fresh_database) == before
    payloads = await fetch(
        fresh_database,
        "SELECT event_id, payload IS NULL AS archived, EXISTS (SELECT 1 FROM event_ids i WHERE i.event_id = e.event_id)"
        " AS id_kept FROM events e",
    )
    assert {r["event_id"] for r in payloads if r["archived"] and not r["id_kept"]} == {
        *(e["event_id"] for e in history()),
        "h-back",
    }
    assert [(r["event_id"], r["archived"], r["id_kept"]) for r in payloads if r["id_kept"]] == [
        ("h-recent", False, True)
    ]
    # the projection and a rebuild from what is kept agree with what was there before
    assert await projected(fresh_database) == projection
    assert await rebuilt(fresh_database) == projection
    # a second run finds nothing more to archive; an archived month refuses an event, also from a service
    # that keeps everything (a shorter retention on the jobs than on the service), by name
    assert (await run_history(fresh_database, now, retention_days=30)).months_archived == {}
    async with serving(app_for(fresh_database, redis_url)) as client:
        late = await client.post(
            "/v1/events",
            json=purchase("late", "hc-0", 150.0, occurred_at="2026-02-20T10:00:00Z"),
            headers=keys["events:write"],
        )
    assert late.status_code == 422
    assert late.json()["errors"] == [
        {"field": "occurred_at", "message": "falls in a month already archived (DELIGHT_RETENTION_DAYS)"}
    ]
    assert await figures(fresh_database) == before


async def test_a_run_that_cannot_have_a_month_in_time_keeps_what_it_did_and_leaves_the_rest(
    fresh_database: str, redis_url: str
) -> None:
    """Each month is archived in a transaction of its own, waiting at most 2 s for its tables: a month another
    transaction holds is left for the next run, and the months before it stay archived (in one transaction for
    the run, the swap of the first month would have held the events table, and the tills, until the end)."""
    keys = await keys_for(fresh_database)
    async with serving(app_for(fresh_database, redis_url)) as client:
        await post_all(client, keys, history(3))
    now = dt.datetime.now(dt.UTC)
    assert (await run_history(fresh_database, now)).partitions_made  # the months of the history, out of default
    holder = await asyncpg.connect(**asyncpg_connect_args(fresh_database))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE events_2026_02 IN ROW EXCLUSIVE MODE")  # as a write to it would
            report = await run_history(fresh_database, now, retention_days=30)
    finally:
        await holder.close()
    assert report.months_archived == {"2026-01": 5}
    assert report.unfinished is not None
    report = await run_history(fresh_database, now, retention_days=30)
    assert report.months_archived == {"2026-02": 5, "2026-03": 5}
    assert report.unfinished is None


async def test_the_migration_converts_a_filled_database_without_losing_a_row(
    fresh_database: str, redis_url: str
) -> None:
    """Filled through the service, taken back to the unpartitioned schema (0021) and brought forward again: every
    figure, the projection rebuilt from the events, and every event's idempotency come through."""
    keys = await keys_for(fresh_database)
    events = history()
    async with serving(app_for(fresh_database, redis_url)) as client:
        await post_all(client, keys, events)
        spent = await client.post(
            "/v1/customers/hc-2/points/redeem",
            json={"order_id": "spend-1", "points": 50},
            headers=keys["awards:redeem"],
        )
    assert spent.status_code == 200
    assert spent.json()["replay"] is False
    before = await figures(fresh_database)
    projection = await rebuilt(fresh_database)

    await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0021")
    kinds = dict((r["relname"], r["relkind"]) for r in await fetch(fresh_database, KIND))
    assert kinds == {"events": "r", "exposures": "r", "points_ledger": "r"}
    assert await figures(fresh_database) == before

    await upgrade_database_async(fresh_database)
    kinds = dict((r["relname"], r["relkind"]) for r in await fetch(fresh_database, KIND))
    assert kinds == {"events": "p", "exposures": "p", "points_ledger": "p"}
    assert await figures(fresh_database) == before
    homes = await fetch(fresh_database, "SELECT DISTINCT tableoid::regclass::text AS t FROM events ORDER BY 1")
    assert [r["t"] for r in homes] == ["events_2026_01", "events_2026_02", "events_2026_03", "events_2026_04"]
    ids = await fetch(fresh_database, "SELECT count(*) AS n FROM event_ids")
    assert ids[0]["n"] == len(events)
    assert await rebuilt(fresh_database) == projection

    async with serving(app_for(fresh_database, redis_url)) as client:
        replay = await client.post("/v1/events", json=events[7], headers=keys["events:write"])
        changed = await client.post(
            "/v1/events", json={**events[7], "occurred_at": "2026-06-01T00:00:00Z"}, headers=keys["events:write"]
        )
        spent_again = await client.post(
            "/v1/customers/hc-2/points/redeem",
            json={"order_id": "spend-1", "points": 50},
            headers=keys["awards:redeem"],
        )
        new = await client.post("/v1/events", json=purchase("after", "hc-0", 150.0), headers=keys["events:write"])
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert changed.status_code == 409
    assert spent_again.status_code == 200
    assert spent_again.json()["replay"] is True
    assert new.status_code == 201
    assert (await figures(fresh_database))["events"][0] == len(events) + 1


async def test_a_month_is_made_while_a_late_row_for_it_is_being_written(fresh_database: str) -> None:
    """A row on its way into the default partition for the month being made is waited for and moved with the
    others, not left to make the new partition fail (the parent is locked before the default partition is
    emptied)."""
    now = dt.datetime.now(dt.UTC)
    month = first_of_month(now, MONTHS_AHEAD)
    for table in ("events", "exposures", "points_ledger"):
        await fetch(fresh_database, f"DROP TABLE {table}_{month:%Y_%m}")  # as if the jobs had not run yet
    writer = await asyncpg.connect(**asyncpg_connect_args(fresh_database))
    try:
        writing = writer.transaction()
        await writing.start()
        await writer.execute(
            "INSERT INTO events (event_id, content_hash, type, customer_id, occurred_at, payload)"
            " VALUES ('ahead', '\\x00', 'interaction', 'c-1', $1, '{}')",
            dt.datetime.combine(month, dt.time(12), dt.UTC),
        )
        run = asyncio.create_task(run_history(fresh_database, now))
        await asyncio.sleep(0.5)  # the run is waiting for the writer's lock on events
        assert not run.done()
        await writing.commit()
        report = await run
    finally:
        await writer.close()
    assert report.unfinished is None
    assert f"events_{month:%Y_%m}" in report.partitions_made
    (home,) = await fetch(fresh_database, "SELECT tableoid::regclass::text AS t FROM events WHERE event_id = 'ahead'")
    assert home["t"] == f"events_{month:%Y_%m}"
