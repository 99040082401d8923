"""SQL for customer profiles."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The stored profile; ``PROFILE_COLUMNS`` adds the favourite category. The event path works that out
# in Python (``profile.favourite``, the same answer): in SQL it cost more than the rest of the upsert's
# RETURNING, a function call per event.
PROFILE_FIELDS = """
    customer_id, purchase_count, return_count, lifetime_spend, first_purchase_at, last_purchase_at,
    last_event_at, category_spend, interaction_counts, points_balance, attributes, award_log, refunds_ahead,
    created_at, updated_at
"""
PROFILE_COLUMNS = f"{PROFILE_FIELDS}, delight_jsonb_top_key(category_spend) AS favourite_category"

# How an event counts into an existing profile, in one atomic statement
# (``events.repository.RECORD``): counters add, dates widen, attributes merge
# (a late event fills gaps but never overwrites what a newer one said). The
# row lock it takes also orders concurrent events of one customer. Counters
# reflect arrival order: a late purchase is judged on the profile as it stands
# when it arrives. Lifetime spend counts each order's payments less its
# refunds, never below zero: a purchase adds its total, less what a return
# that came before it refunded beyond what was paid (``refunds_ahead``, kept on
# the row so that the lock orders it); a return counts in the statement after
# this one, which knows its order (``service.awards.returns``). An event adds
# to one of the two counter objects at most (a purchase to the categories, an
# interaction to the counts); the other is kept as it is rather than passed
# through a PL/pgSQL call that would return it.
UPSERT_CONFLICT = """
    ON CONFLICT (customer_id) DO UPDATE SET
        purchase_count = c.purchase_count + EXCLUDED.purchase_count,
        return_count = c.return_count + EXCLUDED.return_count,
        lifetime_spend = CASE WHEN c.refunds_ahead ? :order_id
                              THEN c.lifetime_spend
                                   + GREATEST(:spend - CAST(c.refunds_ahead ->> :order_id AS numeric), 0)
                              ELSE c.lifetime_spend + :spend END,
        refunds_ahead = CASE WHEN c.refunds_ahead ? :order_id
                             THEN jsonb_set(c.refunds_ahead, ARRAY[CAST(:order_id AS text)], to_jsonb(
                                 GREATEST(CAST(c.refunds_ahead ->> :order_id AS numeric) - :spend, 0)))
                             ELSE c.refunds_ahead END,
        first_purchase_at = LEAST(c.first_purchase_at, EXCLUDED.first_purchase_at),
        last_purchase_at = GREATEST(c.last_purchase_at, EXCLUDED.last_purchase_at),
        last_event_at = GREATEST(c.last_event_at, EXCLUDED.last_event_at),
        category_spend = CASE WHEN EXCLUDED.category_spend = '{}' THEN c.category_spend
                              WHEN (SELECT count(*) FROM jsonb_object_keys(c.category_spend))
                                   + (SELECT count(*) FROM jsonb_object_keys(EXCLUDED.category_spend)) <= 100
                              THEN delight_jsonb_add(c.category_spend, EXCLUDED.category_spend)
                              ELSE delight_jsonb_add_capped(c.category_spend, EXCLUDED.category_spend) END,
        interaction_counts = CASE WHEN EXCLUDED.interaction_counts = '{}' THEN c.interaction_counts
                                  WHEN (SELECT count(*) FROM jsonb_object_keys(c.interaction_counts))
                                       + (SELECT count(*) FROM jsonb_object_keys(EXCLUDED.interaction_counts)) <= 100
                                  THEN delight_jsonb_add(c.interaction_counts, EXCLUDED.interaction_counts)
                                  ELSE delight_jsonb_add_capped(c.interaction_counts, EXCLUDED.interaction_counts) END,
        attributes = delight_merge_attributes(
            c.attributes, EXCLUDED.attributes, EXCLUDED.last_event_at >= c.last_event_at
        ),
        updated_at = now()
"""

GET = text(f"SELECT {PROFILE_COLUMNS} FROM customers WHERE customer_id = :customer_id")


async def get_profile(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    row = (await session.execute(GET, {"customer_id": customer_id})).mappings().one_or_none()
    return None if row is None else dict(row)
