"""A purchase joins its customer's first-exposure timelines inside the event statement, not in one more round trip.

A purchase by a customer who has been exposed updated the timelines of their
first exposures (which the uplift report reads) with a statement of its own,
sent after the event statement: that statement's snapshot had to be taken
after the profile upsert locked the customer's row, so that it saw every
first exposure committed by whoever held the lock before. The update now runs
in ``delight_purchase_joins_timelines``, called from the event statement's
``RETURNING``, which PostgreSQL evaluates once the customer's row is locked
and updated; the function is ``VOLATILE``, so in READ COMMITTED its ``UPDATE``
takes a fresh snapshot and sees the same first exposures the separate
statement saw. The update itself is unchanged.

``delight_merge_attributes`` was declared ``IMMUTABLE`` while its body calls
``jsonb_build_object``, which is only ``STABLE``, so PostgreSQL could not
inline it and ran it as a function call on every event statement (before
PostgreSQL 18 it also planned its body afresh each time: about 20 us). It is
now ``STABLE``, which is what it is, and inlined.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The purchase at p_at, of p_amount, joins the timelines of every first exposure of the customer within
# a year either side of it (0007 describes the timelines); returns how many it joined.
JOINS_TIMELINES = """
CREATE FUNCTION delight_purchase_joins_timelines(p_customer text, p_at timestamptz, p_amount numeric)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cents bigint := round(p_amount * 100)::bigint;
    joined integer;
BEGIN
    UPDATE first_exposures f SET
        after_s = CASE WHEN delight_offset(p_at - f.t0) > 0
                       THEN delight_offsets_add(f.after_s, delight_offset(p_at - f.t0)) ELSE f.after_s END,
        after_cents = CASE WHEN delight_offset(p_at - f.t0) > 0
                           THEN delight_cumulative_add(f.after_s, f.after_cents, delight_offset(p_at - f.t0), cents)
                           ELSE f.after_cents END,
        before_s = CASE WHEN delight_offset(f.t0 - p_at) > 0
                        THEN delight_offsets_add(f.before_s, delight_offset(f.t0 - p_at)) ELSE f.before_s END,
        before_cents = CASE WHEN delight_offset(f.t0 - p_at) > 0
                            THEN delight_cumulative_add(f.before_s, f.before_cents, delight_offset(f.t0 - p_at), cents)
                            ELSE f.before_cents END
    WHERE f.customer_id = p_customer
      AND p_at > f.t0 - interval '366 days'
      AND p_at < f.t0 + interval '366 days'
      AND (delight_offset(p_at - f.t0) BETWEEN 1 AND 31536000 OR delight_offset(f.t0 - p_at) BETWEEN 1 AND 31536000);
    GET DIAGNOSTICS joined = ROW_COUNT;
    RETURN joined;
END
$$
"""


def upgrade() -> None:
    op.execute(JOINS_TIMELINES)
    op.execute("ALTER FUNCTION delight_merge_attributes(jsonb, jsonb, boolean) STABLE")


def downgrade() -> None:
    op.execute("ALTER FUNCTION delight_merge_attributes(jsonb, jsonb, boolean) IMMUTABLE")
    op.execute("DROP FUNCTION delight_purchase_joins_timelines(text, timestamptz, numeric)")
