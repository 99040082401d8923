"""Housekeeping: awards past their expiry become ``expired``; unspent points expire by the settings.

Points are spent oldest first, so what is left of a balance is its newest
earnings: the points that expire are those of the balance not covered by
what was earned since the cut-off. Each run is one transaction under a
transaction-scoped advisory lock, so running it twice, or on two replicas at
once, expires everything exactly once (a second run finds nothing left).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import msgspec
from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.awards.repository import AWARD_COLUMNS
from service.awards.schemas import award_from_row
from service.events.history import keep_history
from service.lib.db import DATABASE_ERRORS, create_sessionmaker, transaction
from service.lib.logging import get_logger
from service.lib.tasks import stop_if_cancelled
from service.rules.ruleset import RuleSet, duration_seconds
from service.rules.spec import WebhookSpec
from service.webhooks import outbox

log = get_logger(__name__)

JOB_LOCK = 0x64656C65  # "dele"

LOCK = text("SELECT pg_try_advisory_xact_lock(:id)")
EXPIRE_AWARDS = text(
    f"""
    UPDATE awards a SET status = 'expired', status_changed_at = :now
    WHERE a.status = 'issued' AND a.expires_at IS NOT NULL AND a.expires_at <= :now
    RETURNING {AWARD_COLUMNS}
    """
)
EXPIRE_POINTS = text(
    """
    WITH due AS (
        SELECT c.customer_id,
               c.points_balance - coalesce((
                   SELECT sum(l.delta) FROM points_ledger l
                   WHERE l.customer_id = c.customer_id AND l.reason = 'earn' AND l.occurred_at > :cutoff
               ), 0) AS amount
        FROM customers c
        WHERE c.points_balance > 0
    ), expired AS (
        UPDATE customers c SET points_balance = c.points_balance - due.amount, updated_at = :now
        FROM due
        WHERE c.customer_id = due.customer_id AND due.amount > 0 AND c.points_balance >= due.amount
        RETURNING c.customer_id, due.amount
    ), entries AS (
        INSERT INTO points_ledger (customer_id, delta, reason, occurred_at)
        SELECT customer_id, -amount, 'expire', :now FROM expired
        RETURNING delta
    )
    SELECT count(*) AS customers, coalesce(-sum(delta), 0) AS points FROM entries
    """
)


class JobReport(Struct):
    ran: bool
    """False when another process held the job lock."""
    awards_expired: int = 0
    customers_with_points_expired: int = 0
    points_expired: int = 0


async def run_expiry(
    session: AsyncSession,
    now: dt.datetime,
    points_after: dt.timedelta | None,
    webhooks: list[WebhookSpec] | None = None,
) -> JobReport:
    if not (await session.execute(LOCK, {"id": JOB_LOCK})).scalar_one():
        return JobReport(ran=False)
    expired = [award_from_row(row) for row in (await session.execute(EXPIRE_AWARDS, {"now": now})).all()]
    await outbox.write(session, outbox.messages(webhooks or [], "award.expired", expired, now))
    awards = len(expired)
    customers = points = 0
    if points_after is not None:
        row = (await session.execute(EXPIRE_POINTS, {"now": now, "cutoff": now - points_after})).one()
        customers, points = int(row.customers), int(row.points)
    return JobReport(ran=True, awards_expired=awards, customers_with_points_expired=customers, points_expired=points)


def points_after(rule_set: RuleSet) -> dt.timedelta | None:
    expiry = rule_set.settings.points_expiry
    return None if expiry is None else dt.timedelta(seconds=duration_seconds(expiry.after))


async def run_periodically(
    engine: AsyncEngine, current: Callable[[], RuleSet], every: float, retention_days: int = 0
) -> None:
    """The jobs inside the service, expiry and then the history's partitions; replicas take turns through the
    jobs' locks."""
    sessions = create_sessionmaker(engine)
    while True:
        stop_if_cancelled()  # a cancellation some library swallowed still ends the loop
        await asyncio.sleep(every)
        try:
            async with transaction(sessions) as session:
                rule_set = current()
                now = dt.datetime.now(dt.UTC)
                report = await run_expiry(session, now, points_after(rule_set), rule_set.settings.webhooks)
            if report.ran:
                log.info("expiry_job", **msgspec.structs.asdict(report))
        except DATABASE_ERRORS as exc:
            stop_if_cancelled()
            log.warning("expiry_job_failed", error=type(exc).__name__)
        try:
            history = await keep_history(engine, dt.datetime.now(dt.UTC), retention_days)
            if history.partitions_made or history.months_archived:
                log.info("history_job", **msgspec.structs.asdict(history))
        except DATABASE_ERRORS as exc:
            stop_if_cancelled()
            log.warning("history_job_failed", error=type(exc).__name__)
