"""The monthly partitions of events, exposures and the points ledger: made ahead, and archived past retention.

Each table is partitioned by month of ``occurred_at`` (migration 0022). The
jobs make the partitions from last month to ``MONTHS_AHEAD`` months ahead, so
the till's inserts always find theirs. A row that found none went to the
table's default partition; its month is made too, which moves it there, when
it lies within ``MONTHS_BACK`` months (or the retention, if longer) and
``MONTHS_AHEAD`` months of now. An event dated further away (a till's clock
years off) stays in the default partition rather than let any client make
partitions by the thousand, which every query not pruned to a month would
plan through. With a retention set, a month of events all older than it is
archived (``delight_archive_event_payloads``): the payloads and the ids go,
every column the reports, returns and rebuilds read stays. The ledger and the
exposures are never archived: balances, expiry and reports stand on them.

A run holds a session-level advisory lock, so replicas take turns, and does
each step (a partition made, a month archived) in a transaction of its own,
waiting at most ``LOCK_TIMEOUT`` for the tables: making or swapping a
partition holds the parent table until its transaction ends, and a run that
cannot have it soon leaves the rest of the work to the next one rather than
queue the tills behind it.
"""

from __future__ import annotations

import datetime as dt
import re

from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.lib.db import DATABASE_ERRORS
from service.lib.logging import get_logger

log = get_logger(__name__)

PARTITIONED = ("events", "exposures", "points_ledger")
MONTHS_AHEAD = 3
MONTHS_BACK = 24
LOCK_TIMEOUT = "2s"
HISTORY_LOCK = 0x68697374  # "hist"

LOCK = text("SELECT pg_try_advisory_lock(:id)")
UNLOCK = text("SELECT pg_advisory_unlock(:id)")
STEP = text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
# The months the default partition holds rows of, within the bounds the jobs make months for.
STRAYS = """
    SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month FROM {table}_default
    WHERE occurred_at >= :since AND occurred_at < :until
"""
MAKE = text("SELECT delight_month_partition(:table, :month) AS made")
MONTHS = text(
    """
    SELECT c.relname AS name, EXISTS (
        SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conname = c.relname || '_archived'
    ) AS archived
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events'::regclass
    """
)
ARCHIVE = text("SELECT delight_archive_event_payloads(:month) AS kept")
MONTH_NAME = re.compile(r"^events_(\d{4})_(\d{2})$")


class HistoryReport(Struct):
    ran: bool
    """False when another process held the lock."""
    partitions_made: list[str] = []
    months_archived: dict[str, int] = {}
    """Per month archived (``YYYY-MM``), the events it keeps, without their payloads."""
    unfinished: str | None = None
    """Why the run stopped before the end (a table it could not have in time): the next run goes on."""


def first_of_month(at: dt.datetime | dt.date, months: int = 0) -> dt.date:
    index = at.year * 12 + at.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _instant(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


async def keep_history(engine: AsyncEngine, now: dt.datetime, retention_days: int) -> HistoryReport:
    """Make the partitions due and archive the months past retention, a transaction per step."""
    async with engine.connect() as conn:
        if not (await conn.execute(LOCK, {"id": HISTORY_LOCK})).scalar_one():
            return HistoryReport(ran=False)
        await conn.commit()
        report = HistoryReport(ran=True)
        try:
            await _make_partitions(conn, now, retention_days, report)
            if retention_days:
                await _archive(conn, now, retention_days, report)
        except DATABASE_ERRORS as exc:
            await conn.rollback()
            report.unfinished = type(exc).__name__
            log.warning("history_job_unfinished", error=report.unfinished, **_done(report))
        finally:
            await conn.execute(UNLOCK, {"id": HISTORY_LOCK})
            await conn.commit()
        return report


def _done(report: HistoryReport) -> dict[str, object]:
    return {"partitions_made": report.partitions_made, "months_archived": report.months_archived}


def stray_window(now: dt.datetime, retention_days: int) -> tuple[dt.datetime, dt.datetime]:
    """The times a row in a default partition is given its month for: ``MONTHS_BACK`` months back (or the
    retention, if longer) to the end of the last month made ahead."""
    since = min(_instant(first_of_month(now, -MONTHS_BACK)), now - dt.timedelta(days=retention_days))
    return since, _instant(first_of_month(now, MONTHS_AHEAD + 1))


async def _make_partitions(conn: AsyncConnection, now: dt.datetime, retention_days: int, report: HistoryReport) -> None:
    since, until = stray_window(now, retention_days)
    ahead = [first_of_month(now, n) for n in range(-1, MONTHS_AHEAD + 1)]
    for table in PARTITIONED:
        strays = (await conn.execute(text(STRAYS.format(table=table)), {"since": since, "until": until})).scalars()
        for month in sorted({*ahead, *strays}):
            await conn.execute(STEP)
            made = (await conn.execute(MAKE, {"table": table, "month": month})).scalar_one()
            await conn.commit()
            if made:
                report.partitions_made.append(f"{table}_{month:%Y_%m}")


async def _archive(conn: AsyncConnection, now: dt.datetime, retention_days: int, report: HistoryReport) -> None:
    # a month is archived once its last instant is older than the retention
    cutoff = now - dt.timedelta(days=retention_days)
    due = []
    for row in (await conn.execute(MONTHS)).all():
        found = MONTH_NAME.match(row.name)
        if found is not None and not row.archived:
            month = dt.date(int(found[1]), int(found[2]), 1)
            if _instant(first_of_month(month, 1)) <= cutoff:
                due.append(month)
    await conn.commit()
    for month in sorted(due):
        await conn.execute(STEP)
        kept = (await conn.execute(ARCHIVE, {"month": month})).scalar_one()
        await conn.commit()
        if kept is not None:
            report.months_archived[f"{month:%Y-%m}"] = int(kept)
