"""Timeline functions the planner can inline: the same results, a fraction of the cost per event.

A first exposure computes its purchase and cost timelines with
``delight_purchase_timeline`` and ``delight_cost_timeline``. Declared with OUT
parameters, each call ran as a separate function execution; declared as
returning a table, PostgreSQL inlines the query into the statement that calls
it (about three times faster per call). ``delight_offsets_add`` loses its
FROM clause so that it is inlined too. Bodies and results are unchanged.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PURCHASE_QUERY = """
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
"""

COST_QUERY = """
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
"""

PURCHASE_ARGS = "p_customer text, p_t0 timestamptz, p_after boolean"
COST_ARGS = "p_customer text, p_campaign text, p_rule text, p_t0 timestamptz, p_new bigint"


def _timelines(returns_table: bool) -> list[str]:
    """The two timeline functions, returning a table (inlinable) or a record of OUT parameters (as in 0007)."""
    statements = []
    for name, args, query in (
        ("delight_purchase_timeline", PURCHASE_ARGS, PURCHASE_QUERY),
        ("delight_cost_timeline", COST_ARGS, COST_QUERY),
    ):
        types = ", ".join(arg.split()[1] for arg in args.split(", "))
        statements.append(f"DROP FUNCTION {name}({types})")
        if returns_table:
            head = f"CREATE FUNCTION {name}({args}) RETURNS TABLE (s integer[], cents bigint[])"
        else:
            head = f"CREATE FUNCTION {name}({args}, OUT s integer[], OUT cents bigint[])"
        statements.append(f"{head} LANGUAGE sql STABLE AS $${query}$$")
    return statements


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION delight_offsets_add(s integer[], o integer) RETURNS integer[]
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT s[1:width_bucket(o, s)] || o || s[width_bucket(o, s) + 1:]
        $$
        """
    )
    for statement in _timelines(returns_table=True):
        op.execute(statement)


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION delight_offsets_add(s integer[], o integer) RETURNS integer[]
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT s[1:p] || o || s[p + 1:] FROM (SELECT width_bucket(o, s) AS p) AS w
        $$
        """
    )
    for statement in _timelines(returns_table=False):
        op.execute(statement)
