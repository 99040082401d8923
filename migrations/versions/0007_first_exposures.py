"""First exposures: each customer's first exposure to a rule and to a campaign, with the purchases around it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A timeline is two arrays: offsets in whole seconds from the first exposure
# (ascending) and the running total in cents up to each offset. The total
# within N days is then one binary search, width_bucket(N * 86400, offsets),
# and one subscript, so the uplift report reads one narrow row per customer
# whatever the window. Adding a purchase inserts at its place and adds its
# amount to every later running total.
OFFSETS_ADD = """
CREATE FUNCTION delight_offsets_add(s integer[], o integer) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT s[1:p] || o || s[p + 1:] FROM (SELECT width_bucket(o, s) AS p) AS w
$$
"""

CUMULATIVE_ADD = """
CREATE FUNCTION delight_cumulative_add(s integer[], c bigint[], o integer, v bigint) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT c[1:p] || (coalesce(c[p], 0) + v)
           || coalesce((SELECT array_agg(x + v ORDER BY i) FROM unnest(c[p + 1:]) WITH ORDINALITY AS u(x, i)), '{}')
    FROM (SELECT width_bucket(o, s) AS p) AS w
$$
"""

# The purchases of one customer within the horizon after (or before) t0, as a
# timeline; used when a first exposure is recorded, so that events which
# arrived before it (a late exposure, a back-filled history) are counted too.
PURCHASE_TIMELINE = """
CREATE FUNCTION delight_purchase_timeline(
    p_customer text, p_t0 timestamptz, p_after boolean, OUT s integer[], OUT cents bigint[]
) LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(o ORDER BY o, event_id), '{}'), coalesce(array_agg(c ORDER BY o, event_id), '{}')
    FROM (
        SELECT o, event_id, sum(v) OVER (ORDER BY o, event_id) AS c
        FROM (
            SELECT delight_offset(CASE WHEN p_after THEN e.occurred_at - p_t0 ELSE p_t0 - e.occurred_at END) AS o,
                   round(e.amount * 100)::bigint AS v, e.event_id
            FROM events e
            WHERE e.customer_id = p_customer AND e.type = 'purchase' AND e.amount IS NOT NULL
              AND e.occurred_at > p_t0 - interval '366 days' AND e.occurred_at < p_t0 + interval '366 days'
        ) AS r
        WHERE o > 0 AND o <= 31536000
    ) AS t
$$
"""

# What the awards of one rule (or, for rule '*', of the whole campaign) given
# to one customer from t0 on have cost, as a timeline; ``p_new`` is the cost of
# the awards being issued at t0 by the same statement (not yet visible to it).
COST_TIMELINE = """
CREATE FUNCTION delight_cost_timeline(
    p_customer text, p_campaign text, p_rule text, p_t0 timestamptz, p_new bigint, OUT s integer[], OUT cents bigint[]
) LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(o ORDER BY o, k), '{}'), coalesce(array_agg(c ORDER BY o, k), '{}')
    FROM (
        SELECT o, k, sum(v) OVER (ORDER BY o, k) AS c
        FROM (
            SELECT delight_offset(a.issued_at - p_t0) AS o, round(a.cost * 100)::bigint AS v, a.award_id::text AS k
            FROM awards a
            WHERE a.customer_id = p_customer AND a.campaign = p_campaign AND (p_rule = '*' OR a.rule_id = p_rule)
              AND a.issued_at >= p_t0 AND a.issued_at < p_t0 + interval '366 days' AND a.cost > 0
            UNION ALL
            SELECT 0, p_new, '' WHERE p_new > 0
        ) AS r
        WHERE o <= 31536000
    ) AS t
$$
"""

# Offsets are whole seconds rounded up: (k - 1, k] seconds becomes k, so
# "within (t0, t0 + N days]" is exactly "offset in 1..N * 86400", to the
# microsecond, and only a purchase at t0 itself has offset 0.
OFFSET = """
CREATE FUNCTION delight_offset(d interval) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ceil(extract(epoch FROM d))::integer
$$
"""

FUNCTIONS = {
    "delight_offset(interval)": OFFSET,
    "delight_offsets_add(integer[], integer)": OFFSETS_ADD,
    "delight_cumulative_add(integer[], bigint[], integer, bigint)": CUMULATIVE_ADD,
    "delight_purchase_timeline(text, timestamptz, boolean)": PURCHASE_TIMELINE,
    "delight_cost_timeline(text, text, text, timestamptz, bigint)": COST_TIMELINE,
}


def upgrade() -> None:
    for sql in FUNCTIONS.values():
        op.execute(sql)
    op.add_column("exposures", sa.Column("holdout", sa.Float(), nullable=True))
    # Set with the first exposure; a purchase joins the customer's timelines only when it is set.
    op.add_column("customers", sa.Column("first_exposed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE customers c SET first_exposed_at = x.t0 "
        "FROM (SELECT customer_id, min(occurred_at) AS t0 FROM exposures GROUP BY customer_id) AS x "
        "WHERE x.customer_id = c.customer_id"
    )
    empty_int = sa.text("'{}'::integer[]")
    empty_big = sa.text("'{}'::bigint[]")
    op.create_table(
        "first_exposures",
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("t0", sa.DateTime(timezone=True), nullable=False),
        sa.Column("group", sa.String(length=10), nullable=False),
        sa.Column("holdout", sa.Float(), nullable=True),
        sa.Column("after_s", postgresql.ARRAY(sa.Integer()), server_default=empty_int, nullable=False),
        sa.Column("after_cents", postgresql.ARRAY(sa.BigInteger()), server_default=empty_big, nullable=False),
        sa.Column("before_s", postgresql.ARRAY(sa.Integer()), server_default=empty_int, nullable=False),
        sa.Column("before_cents", postgresql.ARRAY(sa.BigInteger()), server_default=empty_big, nullable=False),
        sa.Column("cost_s", postgresql.ARRAY(sa.Integer()), server_default=empty_int, nullable=False),
        sa.Column("cost_cents", postgresql.ARRAY(sa.BigInteger()), server_default=empty_big, nullable=False),
        sa.CheckConstraint("\"group\" IN ('treatment', 'control')", name=op.f("ck_first_exposures_group")),
        sa.PrimaryKeyConstraint("campaign", "rule_id", "customer_id", name=op.f("pk_first_exposures")),
    )
    op.create_index("ix_first_exposures_customer_id", "first_exposures", ["customer_id"])
    # Exposures recorded before this table existed.
    op.execute(
        """
        INSERT INTO first_exposures (campaign, rule_id, customer_id, event_id, t0, "group", holdout,
                                     after_s, after_cents, before_s, before_cents, cost_s, cost_cents)
        SELECT f.campaign, f.rule_id, f.customer_id, f.event_id, f.occurred_at, f."group", f.holdout,
               a.s, a.cents, b.s, b.cents, c.s, c.cents
        FROM (
            SELECT DISTINCT ON (campaign, rule_id, customer_id) campaign, rule_id, customer_id, event_id,
                   occurred_at, "group", holdout
            FROM exposures ORDER BY campaign, rule_id, customer_id, occurred_at, event_id
        ) AS f
        CROSS JOIN LATERAL delight_purchase_timeline(f.customer_id, f.occurred_at, true) AS a
        CROSS JOIN LATERAL delight_purchase_timeline(f.customer_id, f.occurred_at, false) AS b
        CROSS JOIN LATERAL delight_cost_timeline(f.customer_id, f.campaign, f.rule_id, f.occurred_at, 0) AS c
        """
    )
    op.execute(
        """
        INSERT INTO first_exposures (campaign, rule_id, customer_id, event_id, t0, "group", holdout,
                                     after_s, after_cents, before_s, before_cents, cost_s, cost_cents)
        SELECT f.campaign, '*', f.customer_id, f.event_id, f.occurred_at, f."group", f.holdout,
               a.s, a.cents, b.s, b.cents, c.s, c.cents
        FROM (
            SELECT DISTINCT ON (campaign, customer_id) campaign, customer_id, event_id, occurred_at, "group", holdout
            FROM exposures ORDER BY campaign, customer_id, occurred_at, event_id
        ) AS f
        CROSS JOIN LATERAL delight_purchase_timeline(f.customer_id, f.occurred_at, true) AS a
        CROSS JOIN LATERAL delight_purchase_timeline(f.customer_id, f.occurred_at, false) AS b
        CROSS JOIN LATERAL delight_cost_timeline(f.customer_id, f.campaign, '*', f.occurred_at, 0) AS c
        """
    )


def downgrade() -> None:
    op.drop_index("ix_first_exposures_customer_id", table_name="first_exposures")
    op.drop_table("first_exposures")
    op.drop_column("customers", "first_exposed_at")
    op.drop_column("exposures", "holdout")
    for signature in reversed(list(FUNCTIONS)):
        op.execute(f"DROP FUNCTION {signature}")
