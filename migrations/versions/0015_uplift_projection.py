"""The uplift data leaves the till's transaction: a projection built in batches from committed events.

Until now the event path kept ``first_exposures`` itself: a purchase rewrote
every first-exposure timeline of its customer, so an event cost more the longer
its customer had been exposed to campaigns. Now the event path writes the
event, the profile and the awards with what exactness needs, and nothing for
the analysts; ``service.projection`` builds their tables from what committed:

- ``events.xid`` is the transaction that stored each event. The projection
  remembers the snapshot up to which it has applied events; a batch applies
  those visible in a newer snapshot and not in the old one, so a transaction
  that commits late (after others that started later) is applied when it
  becomes visible, and none is applied twice. Exposures and awards are
  written in their event's transaction, so they are found through it.
- ``customer_timelines``: each customer's purchases as two arrays, the
  instants in order and the running total in cents at each. A purchase
  rewrites one row, whatever the customer's exposures.
- ``first_exposures`` keeps one row per customer and rule (and per campaign as
  rule ``*``) with its award cost timeline, and loses the purchase timelines:
  the report reads them from the customer's timeline.
- ``projection_state``: the applied snapshot, the batch in progress, the latest
  event time seen and when the projection was last complete.

Existing events count as applied before any snapshot (``xid`` 3); the
projection starts unbuilt (``snapshot`` null), and the first projector to run
builds it from all stored events (``service.projection.build``), as
``delight reports rebuild`` does. Servers of the previous version must be
stopped before this migration: their event statement calls a function it drops.

Three indexes kept for the old timelines go: ``ix_events_occurred_at`` (the
report's latest event time now comes from the projection),
``ix_events_customer_id_occurred_at`` (the purchase timelines were computed
from it; a customer's events are found through
``ix_events_customer_id_order_id``) and ``ix_first_exposures_customer_id``
(only an erasure looks those rows up by customer alone). ``ix_events_xid``
takes their place.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Two timelines merged into one: instants (or offsets) in order, each with the running total up to it; at the
# same instant the first timeline's entries come first. One new entry (most pages bring one purchase per
# customer) goes in at its place and its amount is added to the totals after it, in a loop over the array (a
# query per call, as the general case below, costs several times more); several are merged by turning both
# running totals back into amounts, sorting them together and summing again.
TIMELINE_MERGE = """
CREATE FUNCTION delight_timeline_merge(
    at anycompatiblearray, cum bigint[], new_at anycompatiblearray, new_cum bigint[],
    OUT merged_at anycompatiblearray, OUT merged_cum bigint[]
) LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n integer := cardinality(at);
    p integer;
    amount bigint;
BEGIN
    IF cardinality(new_at) = 0 THEN
        merged_at := at;
        merged_cum := cum;
    ELSIF cardinality(new_at) = 1 THEN
        p := width_bucket(new_at[1], at);  -- the entries at or before the new one
        amount := new_cum[1];
        merged_at := at[1:p] || new_at[1] || at[p + 1:];
        merged_cum := cum[1:p] || (coalesce(cum[p], 0) + amount);
        FOR i IN p + 1 .. n LOOP
            merged_cum := merged_cum || (cum[i] + amount);
        END LOOP;
    ELSE
        SELECT array_agg(t ORDER BY t, k), array_agg(s ORDER BY t, k) INTO merged_at, merged_cum
        FROM (
            SELECT t, k, sum(v) OVER (ORDER BY t, k)::bigint AS s
            FROM (
                SELECT t, i AS k, c - coalesce(lag(c) OVER (ORDER BY i), 0) AS v
                FROM unnest(at, cum) WITH ORDINALITY AS u(t, c, i)
                UNION ALL
                SELECT t, n + i, c - coalesce(lag(c) OVER (ORDER BY i), 0)
                FROM unnest(new_at, new_cum) WITH ORDINALITY AS u(t, c, i)
            ) AS amounts
        ) AS running;
    END IF;
END
$$
"""

# Created by 0007 and 0012 for the event path's timelines; nothing calls them any more.
DROPPED_FUNCTIONS = (
    "delight_purchase_joins_timelines(text, timestamptz, numeric)",
    "delight_purchase_timeline(text, timestamptz, boolean)",
    "delight_cost_timeline(text, text, text, timestamptz, bigint)",
    "delight_offsets_add(integer[], integer)",
    "delight_cumulative_add(integer[], bigint[], integer, bigint)",
)
PURCHASE_COLUMNS = ("after_s", "after_cents", "before_s", "before_cents")


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '3'")  # no rewrite: a constant default
    op.execute("ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
    op.create_index("ix_events_xid", "events", ["xid"])
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_index("ix_events_customer_id_occurred_at", table_name="events")
    op.drop_column("customers", "first_exposed_at")

    for signature in DROPPED_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute(TIMELINE_MERGE)

    op.execute("TRUNCATE first_exposures")  # rebuilt whole by the first projector to run
    for column in PURCHASE_COLUMNS:
        op.drop_column("first_exposures", column)
    # Only an erasure looked rows up by customer alone, and it may scan: every first exposure paid for the index.
    op.drop_index("ix_first_exposures_customer_id", table_name="first_exposures")
    op.add_column("first_exposures", sa.Column("channel", sa.String(length=50), nullable=True))
    op.add_column("first_exposures", sa.Column("store_id", sa.String(length=100), nullable=True))

    op.create_table(
        "customer_timelines",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("at", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=False),
        sa.Column("cum", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_timelines")),
    )
    # Read and written whole, never in a condition (see 0014).
    op.execute("ALTER TABLE customer_timelines ALTER COLUMN at SET STATISTICS 0, ALTER COLUMN cum SET STATISTICS 0")
    # Rows rewritten by the projector (a timeline per purchase, a cost timeline per award) keep room on their page,
    # so that the new version stays there and no index needs a new entry.
    op.execute("ALTER TABLE customer_timelines SET (fillfactor = 70)")
    op.execute("ALTER TABLE first_exposures SET (fillfactor = 80)")
    op.execute(
        """
        CREATE TABLE projection_state (
            name varchar(50) NOT NULL,
            snapshot pg_snapshot,
            complete_at timestamptz,
            target pg_snapshot,
            target_at timestamptz,
            cursor xid8,
            as_of timestamptz,
            events bigint DEFAULT '0' NOT NULL,
            updated_at timestamptz DEFAULT now() NOT NULL,
            CONSTRAINT pk_projection_state PRIMARY KEY (name)
        )
        """
    )
    op.execute("INSERT INTO projection_state (name) VALUES ('uplift')")


def downgrade() -> None:
    raise NotImplementedError("0015 drops the event path's timelines; restore a backup taken before it instead")
