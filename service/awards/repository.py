"""SQL for awards and the points ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from service.controls.plan import LOG_LIMIT
from service.lib.pg import Connection, Sql

AWARD_COLUMNS = """
    a.award_id, a.code, a.event_id, a.campaign, a.rule_id, a.kind, a.points, a.gift_id, a.gift_name, a.offer,
    a.message, a.issued_at, a.expires_at, a.status, a.rule_set_version, a.variant
"""

# One round trip whatever the number of awards, counters included: draw the
# counters of every candidate (``delight_reserve``, migration 0002; or take the
# positions accepted without counters), then, for the candidates accepted,
# insert the awards, write a ledger entry for each points award, record every
# exposure (treated and held out), add the points to the balance and store the
# customer's new surprise log (safe to overwrite: the profile upsert holds this
# customer's row lock). Every row written is one of this event's; none depends
# on how many the customer had before. Every candidate is sent, each row tagged with its
# position among them; the statement returns the positions accepted.
ISSUE = Sql(
    """
    WITH chosen AS MATERIALIZED (
        -- COALESCE evaluates what it needs only: with positions given, nothing is drawn
        SELECT coalesce(CAST(:accepted AS integer[]), delight_reserve(CAST(:plan AS jsonb))) AS positions
    ), new_awards AS (
        INSERT INTO awards (
            award_id, code, event_id, customer_id, campaign, rule_id, position, rule_set_version, kind, points,
            gift_id, gift_name, offer, message, cost, issued_at, expires_at, status, variant
        )
        SELECT a.award_id, a.code, :event_id, :customer_id, a.campaign, a.rule_id,
               row_number() OVER (ORDER BY a.candidate) - 1, :version, a.kind,
               a.points, a.gift_id, a.gift_name, a.offer, a.message, a.cost, :issued_at, a.expires_at, 'issued',
               a.variant
        FROM chosen, jsonb_to_recordset(CAST(:awards AS jsonb)) AS a(
            candidate integer, award_id uuid, code text, campaign text, rule_id text, kind text, points integer,
            gift_id text, gift_name text, offer jsonb, message text, cost numeric, expires_at timestamptz,
            variant text
        )
        WHERE a.candidate = ANY (chosen.positions)
        RETURNING award_id, points
    ), earned AS (
        INSERT INTO points_ledger (customer_id, delta, reason, award_id, event_id, order_id, occurred_at)
        SELECT :customer_id, points, 'earn', award_id, :event_id, :order_id, :issued_at
        FROM new_awards WHERE points IS NOT NULL
        RETURNING delta
    ), exposed AS (
        INSERT INTO exposures (
            event_id, campaign, rule_id, customer_id, "group", occurred_at, award_id, rule_set_version, holdout,
            variant, variant_drawn, programme_held
        )
        SELECT :event_id, x.campaign, x.rule_id, :customer_id, x."group", :issued_at, x.award_id, :version, x.holdout,
               x.variant, x.variant_drawn, x.programme_held
        FROM chosen, jsonb_to_recordset(CAST(:exposures AS jsonb)) AS x(
            candidate integer, campaign text, rule_id text, "group" text, award_id uuid, holdout float8,
            variant text, variant_drawn text, programme_held boolean
        )
        WHERE x.candidate = ANY (chosen.positions)
    ), outboxed AS (
        INSERT INTO outbox (message_id, subscription, type, payload)
        SELECT o.message_id, o.subscription, o.type, o.payload
        FROM chosen, jsonb_to_recordset(CAST(:outbox AS jsonb))
            AS o(candidate integer, message_id uuid, subscription text, type text, payload jsonb)
        WHERE o.candidate = ANY (chosen.positions)
    ), log AS MATERIALIZED (
        -- the surprise log in event time: what came before this event, the entries accepted now, what came after
        SELECT CAST(:log_before AS jsonb)
               || coalesce((SELECT jsonb_agg(l.entry ORDER BY l.candidate)
                            FROM chosen, jsonb_to_recordset(CAST(:log_new AS jsonb)) AS l(candidate int, entry jsonb)
                            WHERE l.candidate = ANY (chosen.positions)), '[]')
               || CAST(:log_after AS jsonb) AS entries
    ), balance AS (
        UPDATE customers
        SET points_balance = points_balance + (SELECT coalesce(sum(delta), 0) FROM earned),
            award_log = (
                -- the newest :log_limit entries
                SELECT CASE WHEN jsonb_array_length(log.entries) <= :log_limit THEN log.entries
                            ELSE (SELECT jsonb_agg(e.entry ORDER BY e.i)
                                  FROM jsonb_array_elements(log.entries) WITH ORDINALITY AS e(entry, i)
                                  WHERE e.i > jsonb_array_length(log.entries) - :log_limit) END
                FROM log
            )
        WHERE customer_id = :customer_id AND cardinality((SELECT positions FROM chosen)) > 0
    )
    SELECT positions FROM chosen
    """
)

ACTIVE_FOR_CUSTOMER = text(
    f"""
    SELECT {AWARD_COLUMNS} FROM awards a
    WHERE a.customer_id = :customer_id AND a.status = 'issued' AND (a.expires_at IS NULL OR a.expires_at > :now)
    ORDER BY a.issued_at DESC, a.position
    LIMIT 200
    """
)


async def issue(
    conn: Connection,
    *,
    event_id: str,
    customer_id: str,
    order_id: str | None,
    issued_at: dt.datetime,
    version: str,
    plan: dict[str, Any] | None,
    accepted: list[int] | None,
    awards: list[dict[str, Any]],
    exposures: list[dict[str, Any]],
    log: tuple[list[Any], list[dict[str, Any]], list[Any]],
    outbox: list[dict[str, Any]],
) -> list[int]:
    """Draw the counters of one event's candidates and store what they give; the positions accepted.

    ``plan`` is ``delight_reserve``'s plan, or ``None`` when ``accepted``
    already holds the positions (no candidate draws a counter). Each row of
    ``awards``, ``exposures`` and ``outbox`` names its ``candidate`` position
    and is stored only when that candidate is accepted. ``log`` is the
    customer's surprise log as (entries before the event, the entry of each
    candidate as ``{"candidate", "entry"}``, entries after it), in event time.
    """
    before, new, after = log
    positions = await ISSUE.fetchval(
        conn,
        {
            "accepted": accepted,
            "plan": plan or {},
            "event_id": event_id,
            "customer_id": customer_id,
            "order_id": order_id,
            "issued_at": issued_at,
            "version": version,
            "awards": awards,
            "exposures": exposures,
            "outbox": outbox,
            "log_before": before,
            "log_new": new,
            "log_after": after,
            "log_limit": LOG_LIMIT,
        },
    )
    return list(positions)


async def active_for_customer(session: AsyncSession, customer_id: str, now: dt.datetime) -> list[Row[Any]]:
    return list((await session.execute(ACTIVE_FOR_CUSTOMER, {"customer_id": customer_id, "now": now})).all())


# The till's redemption: one conditional UPDATE, so of two tills at the same
# moment exactly one sees the award still issued.
REDEEM = text(
    f"""
    UPDATE awards a SET status = 'redeemed', redeemed_order_id = :order_id, status_changed_at = :now
    WHERE a.code = :code AND a.status = 'issued' AND a.kind <> 'points'
      AND (a.expires_at IS NULL OR a.expires_at > :now) AND a.issued_at <= :now + interval '5 minutes'
    RETURNING {AWARD_COLUMNS}, a.redeemed_order_id, a.status_changed_at
    """
)
BY_CODE = text(f"SELECT {AWARD_COLUMNS}, a.redeemed_order_id, a.status_changed_at FROM awards a WHERE a.code = :code")

# Taken before a spend or an adjustment looks for an earlier one of the same
# order: a second request for it waits here and then, in a new statement,
# finds the first one's ledger entry (the ledger, partitioned, cannot hold a
# unique key without its time).
LOCK_CUSTOMER = text("SELECT 1 FROM customers WHERE customer_id = :customer_id FOR UPDATE")

# A points spend: the balance only falls when it covers the spend, and the
# ledger entry is unique per customer and order (a retry finds it instead).
SPEND = text(
    """
    WITH spent AS (
        UPDATE customers SET points_balance = points_balance - :points, updated_at = now()
        WHERE customer_id = :customer_id AND points_balance >= :points
          AND NOT EXISTS (
              SELECT 1 FROM points_ledger
              WHERE customer_id = :customer_id AND order_id = :order_id AND reason = 'spend'
          )
        RETURNING points_balance
    ), entry AS (
        INSERT INTO points_ledger (customer_id, delta, reason, order_id, occurred_at)
        SELECT :customer_id, -CAST(:points AS bigint), 'spend', :order_id, :now FROM spent
        RETURNING entry_id
    )
    SELECT points_balance FROM spent
    """
)
PREVIOUS_SPEND = text(
    """
    SELECT -l.delta AS points, c.points_balance
    FROM points_ledger l JOIN customers c USING (customer_id)
    WHERE l.customer_id = :customer_id AND l.order_id = :order_id AND l.reason = 'spend'
    """
)
BALANCE = text("SELECT points_balance FROM customers WHERE customer_id = :customer_id")
LEDGER = text(
    """
    SELECT entry_id, delta, shortfall, reason, award_id, event_id, order_id, occurred_at, created_at
    FROM points_ledger
    WHERE customer_id = :customer_id AND (CAST(:before AS bigint) IS NULL OR entry_id < :before)
    ORDER BY entry_id DESC
    LIMIT :limit
    """
)


async def redeem(session: AsyncSession, code: str, order_id: str, now: dt.datetime) -> Row[Any] | None:
    """The award, now redeemed by ``order_id``; ``None`` when it was not redeemable as it stood."""
    return (await session.execute(REDEEM, {"code": code, "order_id": order_id, "now": now})).one_or_none()


async def by_code(session: AsyncSession, code: str) -> Row[Any] | None:
    return (await session.execute(BY_CODE, {"code": code})).one_or_none()


async def spend(session: AsyncSession, customer_id: str, points: int, order_id: str, now: dt.datetime) -> int | None:
    """The new balance after spending; ``None`` when the balance does not cover it or the order spent already."""
    await session.execute(LOCK_CUSTOMER, {"customer_id": customer_id})
    row = (
        await session.execute(SPEND, {"customer_id": customer_id, "points": points, "order_id": order_id, "now": now})
    ).one_or_none()
    return None if row is None else int(row.points_balance)


async def previous_spend(session: AsyncSession, customer_id: str, order_id: str) -> Row[Any] | None:
    return (await session.execute(PREVIOUS_SPEND, {"customer_id": customer_id, "order_id": order_id})).one_or_none()


async def balance(session: AsyncSession, customer_id: str) -> int | None:
    value = (await session.execute(BALANCE, {"customer_id": customer_id})).scalar_one_or_none()
    return None if value is None else int(value)


async def ledger(session: AsyncSession, customer_id: str, before: int | None, limit: int) -> list[Row[Any]]:
    rows = await session.execute(LEDGER, {"customer_id": customer_id, "before": before, "limit": limit})
    return list(rows.all())
