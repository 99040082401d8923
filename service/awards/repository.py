"""SQL for awards and the points ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

AWARD_COLUMNS = """
    a.award_id, a.code, a.event_id, a.campaign, a.rule_id, a.kind, a.points, a.gift_id, a.gift_name, a.offer,
    a.message, a.issued_at, a.expires_at, a.status, a.rule_set_version
"""

# One round trip whatever the number of awards: insert them, write a ledger
# entry for each points award, record every exposure (treated and held out),
# add the points to the balance and store the customer's new surprise log
# (safe to overwrite: the profile upsert holds this customer's row lock).
ISSUE = text(
    """
    WITH new_awards AS (
        INSERT INTO awards (
            award_id, code, event_id, customer_id, campaign, rule_id, position, rule_set_version, kind, points,
            gift_id, gift_name, offer, message, cost, issued_at, expires_at, status
        )
        SELECT a.award_id, a.code, :event_id, :customer_id, a.campaign, a.rule_id, a.position, :version, a.kind,
               a.points, a.gift_id, a.gift_name, a.offer, a.message, a.cost, :issued_at, a.expires_at, 'issued'
        FROM jsonb_to_recordset(:awards) AS a(
            award_id uuid, code text, campaign text, rule_id text, position smallint, kind text, points integer,
            gift_id text, gift_name text, offer jsonb, message text, cost numeric, expires_at timestamptz
        )
        RETURNING award_id, points
    ), earned AS (
        INSERT INTO points_ledger (customer_id, delta, reason, award_id, event_id, order_id, occurred_at)
        SELECT :customer_id, points, 'earn', award_id, :event_id, :order_id, :issued_at
        FROM new_awards WHERE points IS NOT NULL
        RETURNING delta
    ), exposed AS (
        INSERT INTO exposures (
            event_id, campaign, rule_id, customer_id, "group", occurred_at, award_id, rule_set_version
        )
        SELECT :event_id, x.campaign, x.rule_id, :customer_id, x."group", :issued_at, x.award_id, :version
        FROM jsonb_to_recordset(:exposures) AS x(campaign text, rule_id text, "group" text, award_id uuid)
    )
    UPDATE customers
    SET points_balance = points_balance + (SELECT coalesce(sum(delta), 0) FROM earned), award_log = :award_log
    WHERE customer_id = :customer_id
    RETURNING points_balance
    """
).bindparams(bindparam("awards", type_=JSONB), bindparam("exposures", type_=JSONB), bindparam("award_log", type_=JSONB))

ACTIVE_FOR_CUSTOMER = text(
    f"""
    SELECT {AWARD_COLUMNS} FROM awards a
    WHERE a.customer_id = :customer_id AND a.status = 'issued' AND (a.expires_at IS NULL OR a.expires_at > :now)
    ORDER BY a.issued_at DESC, a.position
    LIMIT 200
    """
)


async def issue(
    session: AsyncSession,
    *,
    event_id: str,
    customer_id: str,
    order_id: str | None,
    issued_at: dt.datetime,
    version: str,
    awards: list[dict[str, Any]],
    exposures: list[dict[str, Any]],
    award_log: list[Any],
) -> int:
    """Store the awards and exposures of one event; returns the customer's new points balance."""
    result = await session.execute(
        ISSUE,
        {
            "event_id": event_id,
            "customer_id": customer_id,
            "order_id": order_id,
            "issued_at": issued_at,
            "version": version,
            "awards": awards,
            "exposures": exposures,
            "award_log": award_log,
        },
    )
    return int(result.scalar_one())


async def active_for_customer(session: AsyncSession, customer_id: str, now: dt.datetime) -> list[Row[Any]]:
    return list((await session.execute(ACTIVE_FOR_CUSTOMER, {"customer_id": customer_id, "now": now})).all())
