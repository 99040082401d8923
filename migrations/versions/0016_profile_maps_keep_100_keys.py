"""A profile keeps at most 100 categories and 100 interaction names.

``delight_jsonb_add`` folds an event's spend by category (or its interaction)
into the customer's profile by rewriting the whole JSON object, so a profile
that had collected thousands of category names (an event may carry a thousand
items, each with its own) made every later event of that customer slower:
60 purchases with 1,000 new categories each brought an event to 160 ms. Now
the keys a profile already has keep counting, and new ones are taken only
while the map holds fewer than 100, the first in code point order (the event
itself is cut to 100 the same way, ``service.customers.profile``). A profile
that has more already keeps them, and takes no new ones. The profile upsert
calls ``delight_jsonb_add_capped`` only when the two maps hold more than 100
keys between them: ranking the keys in every event's statement cost 7% more
CPU per event (``bench/ab.py``), for a case that is rare.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAPPED = """
CREATE FUNCTION delight_jsonb_add_capped(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, total, known, row_number() OVER (ORDER BY known DESC, key COLLATE "C") AS n
        FROM (
            SELECT key, sum(value::numeric) AS total, bool_or(known) AS known
            FROM (
                SELECT key, value, true AS known FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
                UNION ALL
                SELECT key, value, false FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
            ) AS parts
            GROUP BY key
        ) AS sums
    ) AS ranked
    WHERE known OR n <= 100
$$
"""


def upgrade() -> None:
    op.execute(CAPPED)


def downgrade() -> None:
    op.execute("DROP FUNCTION delight_jsonb_add_capped(jsonb, jsonb)")
