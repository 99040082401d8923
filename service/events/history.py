"""The monthly partitions of events, exposures and the points ledger: made ahead, and archived past retention.

Each table is partitioned by month of ``occurred_at`` (migration 0022). The
jobs make the partitions from last month to ``MONTHS_AHEAD`` months ahead, so
the till's inserts always find theirs; a row that found none went to the
table's default partition, and the month it needs is made too, which moves it
there. With a retention set, a month of events all older than it is archived
(``delight_archive_event_payloads``): the payloads and the ids go, every
column the reports, returns and rebuilds read stays. The ledger and the
exposures are never archived: balances, expiry and reports stand on them.

Each run is one transaction under its own advisory lock, so replicas take
turns, and waits at most ``LOCK_TIMEOUT`` for the tables: making or swapping a
partition holds the parent table for a moment, and a run that cannot have it
soon leaves the work to the next one rather than queue the tills behind it.
"""

from __future__ import annotations

import datetime as dt
import re

from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

PARTITIONED = ("events", "exposures", "points_ledger")
MONTHS_AHEAD = 3
LOCK_TIMEOUT = "2s"
HISTORY_LOCK = 0x68697374  # "hist"

LOCK = text("SELECT pg_try_advisory_xact_lock(:id)")
# The months the default partition holds rows of: each needs a partition of its own.
STRAYS = "SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month FROM {table}_default"
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


def first_of_month(at: dt.datetime | dt.date, months: int = 0) -> dt.date:
    index = at.year * 12 + at.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


async def keep_history(session: AsyncSession, now: dt.datetime, retention_days: int) -> HistoryReport:
    """Make the partitions due and archive the months past retention, in the session's transaction."""
    if not (await session.execute(LOCK, {"id": HISTORY_LOCK})).scalar_one():
        return HistoryReport(ran=False)
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    report = HistoryReport(ran=True)
    ahead = [first_of_month(now, n) for n in range(-1, MONTHS_AHEAD + 1)]
    for table in PARTITIONED:
        strays = (await session.execute(text(STRAYS.format(table=table)))).scalars().all()
        for month in sorted({*ahead, *strays}):
            if (await session.execute(MAKE, {"table": table, "month": month})).scalar_one():
                report.partitions_made.append(f"{table}_{month:%Y_%m}")
    if retention_days:
        # a month is archived once its last instant is older than the retention
        cutoff = now - dt.timedelta(days=retention_days)
        for row in (await session.execute(MONTHS)).all():
            found = MONTH_NAME.match(row.name)
            if found is None or row.archived:
                continue
            month = dt.date(int(found[1]), int(found[2]), 1)
            if dt.datetime.combine(first_of_month(month, 1), dt.time(), dt.UTC) <= cutoff:
                kept = (await session.execute(ARCHIVE, {"month": month})).scalar_one()
                report.months_archived[f"{month:%Y-%m}"] = int(kept)
    return report
