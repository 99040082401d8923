"""Redeeming award codes and spending points at the till.

Both are idempotent per order: a till that retries gets the same answer, and
of two tills racing for the same code exactly one wins. Whether an award has
expired is judged at the moment of redemption: ``redeemed_at`` when a till
that was offline sends it, otherwise now.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from msgspec import Meta, Struct
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.awards import repository
from service.awards.codes import normalise
from service.awards.schemas import AwardOut, award_from_row
from service.lib.db import transaction
from service.lib.errors import (
    AwardAlreadyRedeemedError,
    AwardExpiredError,
    AwardNotRedeemableError,
    FieldError,
    InsufficientPointsError,
    NotFoundError,
    PointsOrderConflictError,
    ValidationError,
)
from service.rules.ruleset import duration_seconds
from service.rules.spec import WebhookSpec
from service.webhooks import outbox

OrderId = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far a till's clock may run ahead of the server's, and of the clock of the till whose event issued the award."""

RedeemedAt = Annotated[
    dt.datetime,
    Meta(
        tz=True,
        description="When the till redeemed it, for a till syncing after being offline: not in the future (5 "
        "minutes of clock skew allowed), not before the award was issued, and at most `offline_redemptions` ago "
        "(rules/settings.yaml, 3 days unless set); default: now.",
    ),
]


def redemption_time(redeemed_at: dt.datetime | None, now: dt.datetime, window: str) -> dt.datetime:
    """The moment a redemption is judged at: the till's ``redeemed_at`` within the bounds it may have (``window``
    is ``offline_redemptions``), or now.

    Expiry is judged at that moment, so an unbounded one would let any expired award be redeemed by sending an
    earlier time.
    """
    if redeemed_at is None:
        return now
    if redeemed_at > now + CLOCK_SKEW:
        raise _bad_time(f"is in the future (the server's time is {now:%Y-%m-%dT%H:%M:%SZ})")
    if redeemed_at < now - dt.timedelta(seconds=duration_seconds(window)):
        raise _bad_time(f"is further back than offline redemptions may go (`offline_redemptions: {window}`)")
    return redeemed_at


def _bad_time(why: str) -> ValidationError:
    return ValidationError(f"redeemed_at {why}", errors=[FieldError(field="redeemed_at", message=why)])


class RedeemIn(Struct, forbid_unknown_fields=True):
    order_id: Annotated[OrderId, Meta(description="The till's order; redeeming again for it is a no-op.")]
    redeemed_at: RedeemedAt | None = None


class RedemptionOut(Struct):
    award: AwardOut
    order_id: str
    redeemed_at: dt.datetime
    replay: Annotated[bool, Meta(description="True when this order had already redeemed the award.")]


class PointsRedeemIn(Struct, forbid_unknown_fields=True):
    points: Annotated[int, Meta(ge=1, le=100_000_000)]
    order_id: OrderId
    redeemed_at: RedeemedAt | None = None


class PointsRedemptionOut(Struct):
    customer_id: str
    order_id: str
    points: int
    points_balance: int
    replay: bool


def _not_found(code: str) -> NotFoundError:
    return NotFoundError(f"no award has the code {code!r}; check it for typos")


async def redeem_award(
    session: AsyncSession, code: str, order_id: str, now: dt.datetime, webhooks: list[WebhookSpec]
) -> RedemptionOut:
    canonical = normalise(code)
    if canonical is None:  # a typo: the check character says so without asking the database
        raise _not_found(code)
    row = await repository.redeem(session, canonical, order_id, now)
    if row is not None:
        award = award_from_row(row)
        await outbox.write(session, outbox.messages(webhooks, "award.redeemed", [award], now))
        return RedemptionOut(award, order_id, row.status_changed_at, replay=False)
    row = await repository.by_code(session, canonical)
    if row is None:
        raise _not_found(code)
    if row.status == "redeemed":
        if row.redeemed_order_id == order_id:
            return RedemptionOut(award_from_row(row), order_id, row.status_changed_at, replay=True)
        raise AwardAlreadyRedeemedError(f"award {canonical} was redeemed by another order")
    if row.kind == "points":
        raise AwardNotRedeemableError("points awards are credited to the balance; spend them as points")
    if row.status == "reversed":
        raise AwardNotRedeemableError(f"award {canonical} was reversed (its order was returned)")
    if row.issued_at > now + CLOCK_SKEW:
        raise _bad_time(f"is before the award was issued ({row.issued_at:%Y-%m-%dT%H:%M:%SZ})")
    expired = row.status == "expired" or (row.expires_at is not None and row.expires_at <= now)
    if expired:
        raise AwardExpiredError(f"award {canonical} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC")
    raise AwardNotRedeemableError(f"award {canonical} cannot be redeemed ({row.status})")  # pragma: no cover


async def spend_points(
    sessions: async_sessionmaker[AsyncSession], customer_id: str, points: int, order_id: str, now: dt.datetime
) -> PointsRedemptionOut:
    async with transaction(sessions) as session:
        balance = await repository.spend(session, customer_id, points, order_id, now)
        if balance is not None:
            return PointsRedemptionOut(customer_id, order_id, points, balance, replay=False)
        outcome = await _why_not(session, customer_id, points, order_id)
    if isinstance(outcome, PointsRedemptionOut):
        return outcome
    raise outcome


async def _why_not(
    session: AsyncSession, customer_id: str, points: int, order_id: str
) -> PointsRedemptionOut | Exception:
    previous = await repository.previous_spend(session, customer_id, order_id)
    if previous is not None:
        if previous.points != points:
            return PointsOrderConflictError(f"order {order_id!r} already spent {previous.points} points, not {points}")
        return PointsRedemptionOut(customer_id, order_id, points, int(previous.points_balance), replay=True)
    balance = await repository.balance(session, customer_id)
    if balance is None:
        return NotFoundError(f"no customer {customer_id!r}")
    return InsufficientPointsError(f"the balance is {balance} points; {points} were asked")


class LedgerEntryOut(Struct):
    entry_id: int
    delta: int
    reason: str
    shortfall: int
    """For a reversal: points it could not take back because they had been spent."""
    award_id: str | None
    event_id: str | None
    order_id: str | None
    occurred_at: dt.datetime


def ledger_entry(row: Any) -> LedgerEntryOut:
    return LedgerEntryOut(
        entry_id=row.entry_id,
        delta=row.delta,
        reason=row.reason,
        shortfall=row.shortfall,
        award_id=None if row.award_id is None else str(row.award_id),
        event_id=row.event_id,
        order_id=row.order_id,
        occurred_at=row.occurred_at,
    )
