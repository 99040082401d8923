"""Manual point adjustments: a goodwill credit or a correction, by an administrator, audited.

Idempotent per ``adjustment_id`` (a unique index holds it under concurrency);
a debit never takes the balance below zero.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from msgspec import Meta, Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.audit import repository as audit
from service.awards.repository import LOCK_CUSTOMER
from service.lib.db import transaction
from service.lib.errors import ConflictError, FieldError, InsufficientPointsError, NotFoundError, ValidationError


class PointsAdjustIn(Struct, forbid_unknown_fields=True):
    points: Annotated[int, Meta(ge=-100_000_000, le=100_000_000, description="Positive credits, negative debits.")]
    note: Annotated[str, Meta(min_length=1, max_length=200, description="Why; kept in the audit log.")]
    adjustment_id: Annotated[
        str,
        Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$", description="Sending it again is a no-op."),
    ]


class PointsAdjustOut(Struct):
    customer_id: str
    adjustment_id: str
    points: int
    points_balance: int
    replay: bool


ADJUST = text(
    """
    WITH done AS (
        UPDATE customers SET points_balance = points_balance + :points, updated_at = now()
        WHERE customer_id = :customer_id AND points_balance + :points >= 0
          AND NOT EXISTS (
              SELECT 1 FROM points_ledger
              WHERE customer_id = :customer_id AND order_id = :adjustment_id AND reason = 'adjust'
          )
        RETURNING points_balance
    ), entry AS (
        INSERT INTO points_ledger (customer_id, delta, reason, order_id, occurred_at)
        SELECT :customer_id, CAST(:points AS bigint), 'adjust', :adjustment_id, :now FROM done
    )
    SELECT points_balance FROM done
    """
)
PREVIOUS = text(
    """
    SELECT l.delta, c.points_balance FROM points_ledger l JOIN customers c USING (customer_id)
    WHERE l.customer_id = :customer_id AND l.order_id = :adjustment_id AND l.reason = 'adjust'
    """
)
BALANCE = text("SELECT points_balance FROM customers WHERE customer_id = :customer_id")


async def adjust_points(
    sessions: async_sessionmaker[AsyncSession], customer_id: str, body: PointsAdjustIn, actor: str
) -> PointsAdjustOut:
    if body.points == 0:
        raise ValidationError(
            "an adjustment of 0 points changes nothing", errors=[FieldError("points", "must not be 0")]
        )
    params = {
        "customer_id": customer_id,
        "points": body.points,
        "adjustment_id": body.adjustment_id,
        "now": dt.datetime.now(dt.UTC),
    }
    async with transaction(sessions) as session:
        # the same adjustment sent twice at once: the second waits here, then finds the first one's entry
        await session.execute(LOCK_CUSTOMER, params)
        balance = (await session.execute(ADJUST, params)).scalar_one_or_none()
        if balance is not None:
            details = {"points": body.points, "note": body.note, "adjustment_id": body.adjustment_id}
            await audit.record(session, actor, "points.adjusted", customer_id, {**details, "balance": balance})
            return PointsAdjustOut(customer_id, body.adjustment_id, body.points, int(balance), replay=False)
    async with sessions() as session:
        previous = (await session.execute(PREVIOUS, params)).one_or_none()
        if previous is not None:
            if previous.delta != body.points:
                raise ConflictError(
                    f"adjustment {body.adjustment_id!r} already applied {previous.delta} points, not {body.points}"
                )
            return PointsAdjustOut(
                customer_id, body.adjustment_id, body.points, int(previous.points_balance), replay=True
            )
        balance = (await session.execute(BALANCE, params)).scalar_one_or_none()
    if balance is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    raise InsufficientPointsError(f"the balance is {balance} points; a debit of {-body.points} would go below zero")
