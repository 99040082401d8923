"""Lifetime spend counts each order once, whatever order its purchase and returns arrive in.

Lifetime spend was the sum of every purchase less every refund, floored at
zero as a whole: a return that arrived before its purchase (a till syncing
late) was floored away, and the purchase then counted in full, while the same
two events the other way round gave zero. Now each order counts what was paid
for it less what was refunded, never below zero, and a refund of an order
Delight has not seen paid is kept on the profile (``refunds_ahead``: order id
to the amount refunded beyond what was paid) until its purchase arrives and
nets it off. Existing profiles are counted again from their stored events.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only customers with a return can count differently; orders are found through ix_events_customer_id_order_id.
RECOUNT = """
WITH orders AS (
    SELECT customer_id, order_id,
           coalesce(sum(amount) FILTER (WHERE type = 'purchase'), 0) AS paid,
           coalesce(sum(amount) FILTER (WHERE type = 'return'), 0) AS refunded
    FROM events
    WHERE type IN ('purchase', 'return') AND order_id IS NOT NULL
      AND customer_id IN (SELECT customer_id FROM events WHERE type = 'return')
    GROUP BY customer_id, order_id
), counted AS (
    SELECT customer_id, sum(GREATEST(paid - refunded, 0)) AS spend,
           jsonb_object_agg(order_id, refunded - paid) FILTER (WHERE refunded > paid) AS ahead
    FROM orders
    GROUP BY customer_id
)
UPDATE customers c SET lifetime_spend = counted.spend, refunds_ahead = counted.ahead
FROM counted
WHERE c.customer_id = counted.customer_id
"""


def upgrade() -> None:
    op.add_column("customers", sa.Column("refunds_ahead", JSONB, nullable=True))
    op.execute(RECOUNT)


def downgrade() -> None:
    op.drop_column("customers", "refunds_ahead")
