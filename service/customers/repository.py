"""SQL for customer profiles."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.lib.pg import Connection, Sql

# The stored profile; ``PROFILE_COLUMNS`` adds the favourite category. The event path works that out
# in Python (``profile.favourite``, the same answer): in SQL it cost more than the rest of the upsert's
# RETURNING, a function call per event.
PROFILE_FIELDS = """
    customer_id, purchase_count, return_count, lifetime_spend, first_purchase_at, last_purchase_at,
    last_event_at, category_spend, interaction_counts, points_balance, attributes, award_log, created_at, updated_at
"""
PROFILE_COLUMNS = f"{PROFILE_FIELDS}, delight_jsonb_top_key(category_spend) AS favourite_category"

# How an event counts into an existing profile, in one atomic statement
# (``events.repository.RECORD``): counters add, dates widen, attributes merge
# (a late event fills gaps but never overwrites what a newer one said). The
# row lock it takes also orders concurrent events of one customer. Counters
# reflect arrival order: a late purchase is judged on the profile as it stands
# when it arrives. An event adds to one of the two counter objects at most (a
# purchase to the categories, an interaction to the counts); the other is kept
# as it is rather than passed through a PL/pgSQL call that would return it.
UPSERT_CONFLICT = """
    ON CONFLICT (customer_id) DO UPDATE SET
        purchase_count = c.purchase_count + EXCLUDED.purchase_count,
        return_count = c.return_count + EXCLUDED.return_count,
        lifetime_spend = GREATEST(c.lifetime_spend + :spend, 0),
        first_purchase_at = LEAST(c.first_purchase_at, EXCLUDED.first_purchase_at),
        last_purchase_at = GREATEST(c.last_purchase_at, EXCLUDED.last_purchase_at),
        last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at),
        category_spend = CASE WHEN EXCLUDED.category_spend = '{}' THEN c.category_spend
                              ELSE delight_jsonb_add(c.category_spend, EXCLUDED.category_spend) END,
        interaction_counts = CASE WHEN EXCLUDED.interaction_counts = '{}' THEN c.interaction_counts
                                  ELSE delight_jsonb_add(c.interaction_counts, EXCLUDED.interaction_counts) END,
        attributes = delight_merge_attributes(
            c.attributes, EXCLUDED.attributes, EXCLUDED.last_event_at >= c.last_event_at
        ),
        updated_at = now()
"""

# A purchase joins the timelines of the customer's first exposures within a
# year either side of it, which the uplift report reads (0007's migration
# describes the timeline). A statement of its own, run only for a customer who
# has been exposed and only after the profile upsert holds the customer's row:
# its snapshot then sees every first exposure of this customer, committed by
# whoever held that lock before.
_AFTER = "delight_offset(CAST(:occurred_at AS timestamptz) - f.t0)"
_BEFORE = "delight_offset(f.t0 - CAST(:occurred_at AS timestamptz))"
_CENTS = "round(CAST(:amount AS numeric) * 100)::bigint"
TIMELINE = Sql(
    f"""
    UPDATE first_exposures f SET
        after_s = CASE WHEN {_AFTER} > 0 THEN delight_offsets_add(f.after_s, {_AFTER}) ELSE f.after_s END,
        after_cents = CASE WHEN {_AFTER} > 0
                           THEN delight_cumulative_add(f.after_s, f.after_cents, {_AFTER}, {_CENTS})
                           ELSE f.after_cents END,
        before_s = CASE WHEN {_BEFORE} > 0 THEN delight_offsets_add(f.before_s, {_BEFORE}) ELSE f.before_s END,
        before_cents = CASE WHEN {_BEFORE} > 0
                            THEN delight_cumulative_add(f.before_s, f.before_cents, {_BEFORE}, {_CENTS})
                            ELSE f.before_cents END
    WHERE f.customer_id = :customer_id
      AND CAST(:occurred_at AS timestamptz) > f.t0 - interval '366 days'
      AND CAST(:occurred_at AS timestamptz) < f.t0 + interval '366 days'
      AND ({_AFTER} BETWEEN 1 AND 31536000 OR {_BEFORE} BETWEEN 1 AND 31536000)
    """
)

GET = text(f"SELECT {PROFILE_COLUMNS} FROM customers WHERE customer_id = :customer_id")


async def add_purchase_to_timelines(
    conn: Connection, customer_id: str, occurred_at: dt.datetime, amount: Decimal
) -> None:
    await TIMELINE.execute(conn, {"customer_id": customer_id, "occurred_at": occurred_at, "amount": amount})


async def get_profile(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    row = (await session.execute(GET, {"customer_id": customer_id})).mappings().one_or_none()
    return None if row is None else dict(row)
