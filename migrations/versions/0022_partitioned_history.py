"""History that ages well: events, exposures and the points ledger partitioned by month of ``occurred_at``.

Each of the three becomes a table partitioned by range of ``occurred_at``, one
partition per calendar month (UTC) named ``<table>_YYYY_MM``, and a
``<table>_default`` partition for a row whose month has none yet. The jobs make
the partitions a few months ahead (``delight_month_partition``), so the default
partition stays empty in the normal course; a late event from before the
oldest month lands there and the next run moves it into a partition of its own.

A unique key of a partitioned table must include ``occurred_at``, so the event
id is kept unique by a table of its own, ``event_ids``: the event path inserts
the id first (``ON CONFLICT DO NOTHING``, which waits for a concurrent insert of
the same id as before) and stores the event only when that row is new. Its
``occurred_at`` leads a retry's lookup to the one partition that holds the
event.

The three tables carry no foreign keys any more: every row of theirs is written
by the statement that writes the rows it names (the customer upsert, the
awards), a check per row would cost the till's path, and a partition without
them can be swapped whole (``delight_archive_event_payloads``). The unique
spend and adjustment keys of the ledger (per customer and order) become plain
indexes; the customer's row lock, taken before the check, keeps them unique.

Retention (``DELIGHT_RETENTION_DAYS``) archives a month of events once all of it
is older than the retention: its partition is replaced by a copy without the
payloads (the columns the reports, returns and rebuilds need stay) and its ids
leave ``event_ids``; the service refuses an event older than the retention, so a
retry of an archived event is refused rather than counted again.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONED = ("events", "exposures", "points_ledger")

# The partition of one month, made if missing: the rows the default partition holds for that month move into
# it, and a column the parent keeps out of ANALYZE is kept out on the partition too. The parent is locked first,
# so that no row reaches the default partition for that month between the move and the making (which would
# fail), and in the order the inserts take their locks. True when it was made.
MONTH_PARTITION = """
CREATE FUNCTION delight_month_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first date := month - (extract(day FROM month)::int - 1);
    part text := parent || '_' || to_char(first, 'YYYY_MM');
    lo timestamptz := first::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    col text;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
    EXECUTE format('CREATE TEMP TABLE delight_moving AS SELECT * FROM %I WITH NO DATA', parent || '_default');
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) '
        'INSERT INTO delight_moving SELECT * FROM moved', parent || '_default') USING lo, hi;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, parent, lo, hi);
    EXECUTE format('INSERT INTO %I SELECT * FROM delight_moving', part);
    DROP TABLE delight_moving;
    FOR col IN
        SELECT attname FROM pg_attribute
        WHERE attrelid = parent::regclass AND attnum > 0 AND NOT attisdropped AND attstattarget = 0
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET STATISTICS 0', part, col);
    END LOOP;
    RETURN true;
END
$$
"""

# A month of events without its payloads: a copy of the partition with NULL payloads replaces it, under a
# constraint that says so (and bounds it, so that attaching it needs no scan), and the month's ids leave
# event_ids. The copy holds the month's partition against writes (an erasure waits for it), and only the swap
# holds the events table, briefly; run it in a transaction of its own, or that lock lasts until the
# transaction ends. An erasure of one of the month's customers started during the copy and the swap wait for
# each other: PostgreSQL ends the swap's transaction, to be run again. The number of events kept, or NULL when
# there is no such partition or it was archived already.
ARCHIVE_PAYLOADS = """
CREATE FUNCTION delight_archive_event_payloads(month date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first date := month - (extract(day FROM month)::int - 1);
    part text := 'events_' || to_char(first, 'YYYY_MM');
    kept text := part || '_kept';
    lo timestamptz := first::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    columns text;
    n bigint;
BEGIN
    IF to_regclass(part) IS NULL
       OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(part) AND conname = part || '_archived')
    THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(CASE WHEN attname = 'payload' THEN 'NULL' ELSE quote_ident(attname) END, ', ' ORDER BY attnum)
    INTO columns
    FROM pg_attribute WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped;
    EXECUTE format('LOCK TABLE %I IN SHARE MODE', part);
    EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)', kept);
    EXECUTE format('INSERT INTO %I SELECT %s FROM %I', kept, columns, part);
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format(
        'ALTER TABLE %I ADD CONSTRAINT %I CHECK (payload IS NULL AND occurred_at >= %L AND occurred_at < %L)',
        kept, part || '_archived', lo, hi);
    EXECUTE format('DELETE FROM event_ids i USING %I e WHERE i.event_id = e.event_id', part);
    EXECUTE format('ALTER TABLE events DETACH PARTITION %I', part);
    EXECUTE format('DROP TABLE %I', part);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', kept, part);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN payload SET STATISTICS 0', part);
    RETURN n;
END
$$
"""

# (table, primary key, indexes as (name, columns, condition)) of the partitioned tables.
KEYS = {
    "events": (
        "event_id, occurred_at",
        [("ix_events_customer_id_order_id", "customer_id, order_id", None), ("ix_events_xid", "xid", None)],
    ),
    "exposures": (
        "event_id, campaign, rule_id, occurred_at",
        [("ix_exposures_campaign_customer_id_occurred_at", "campaign, customer_id, occurred_at", None)],
    ),
    "points_ledger": (
        "entry_id, occurred_at",
        [
            ("ix_points_ledger_customer_id_entry_id", "customer_id, entry_id", None),
            ("ix_points_ledger_spend_order", "customer_id, order_id", "reason = 'spend'"),
            ("ix_points_ledger_adjustment", "customer_id, order_id", "reason = 'adjust'"),
        ],
    ),
}
FOREIGN_KEYS = {
    "awards": [("fk_awards_event_id_events", "event_id", "events (event_id)")],
    "events": [
        ("fk_events_customer_id_customers", "customer_id", "customers (customer_id) DEFERRABLE INITIALLY DEFERRED")
    ],
    "exposures": [
        ("fk_exposures_event_id_events", "event_id", "events (event_id)"),
        ("fk_exposures_award_id_awards", "award_id", "awards (award_id)"),
        (
            "fk_exposures_customer_id_customers",
            "customer_id",
            "customers (customer_id) DEFERRABLE INITIALLY DEFERRED",
        ),
    ],
    "points_ledger": [
        ("fk_points_ledger_event_id_events", "event_id", "events (event_id)"),
        ("fk_points_ledger_award_id_awards", "award_id", "awards (award_id)"),
        (
            "fk_points_ledger_customer_id_customers",
            "customer_id",
            "customers (customer_id) DEFERRABLE INITIALLY DEFERRED",
        ),
    ],
}


def _drop_foreign_keys() -> None:
    # awards' first: they name events' primary key
    for table in ("awards", *PARTITIONED):
        for name, _, _ in FOREIGN_KEYS[table]:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")


def _add_foreign_keys() -> None:
    for table in (*PARTITIONED, "awards"):
        for name, column, target in FOREIGN_KEYS[table]:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) REFERENCES {target}")


def upgrade() -> None:
    op.execute(MONTH_PARTITION)
    op.execute(ARCHIVE_PAYLOADS)
    op.execute(
        """
        CREATE TABLE event_ids (
            event_id varchar(200) NOT NULL,
            occurred_at timestamptz NOT NULL,
            CONSTRAINT pk_event_ids PRIMARY KEY (event_id)
        )
        """
    )
    op.execute("INSERT INTO event_ids (event_id, occurred_at) SELECT event_id, occurred_at FROM events")
    _drop_foreign_keys()
    # the ledger's sequence outlives the table it was made for
    op.execute("ALTER SEQUENCE points_ledger_entry_id_seq OWNED BY NONE")
    for table, (primary_key, indexes) in KEYS.items():
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        op.execute(
            f"""
            CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
            PARTITION BY RANGE (occurred_at)
            """
        )
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        op.execute(
            f"""
            SELECT delight_month_partition('{table}', m::date)
            FROM (
                SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AS m FROM {table}_unpartitioned
                UNION
                SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month',
                                       date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months',
                                       interval '1 month')
            ) AS months
            """
        )
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")
        op.execute(f"DROP TABLE {table}_unpartitioned")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({primary_key})")
        for name, columns, where in indexes:
            op.execute(f"CREATE INDEX {name} ON {table} ({columns})" + (f" WHERE {where}" if where else ""))
    op.execute("ALTER SEQUENCE points_ledger_entry_id_seq OWNED BY points_ledger.entry_id")
    op.execute("ALTER TABLE events ALTER COLUMN payload DROP NOT NULL")
    op.execute("ALTER TABLE events ALTER COLUMN payload SET STATISTICS 0")


def downgrade() -> None:
    op.execute("ALTER SEQUENCE points_ledger_entry_id_seq OWNED BY NONE")
    for table in PARTITIONED:
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        op.execute(f"ALTER TABLE {table}_partitioned DROP CONSTRAINT pk_{table}")
        for name, _, _ in KEYS[table][1]:
            op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_partitioned")
        op.execute(f"DROP TABLE {table}_partitioned")
    op.execute("ALTER SEQUENCE points_ledger_entry_id_seq OWNED BY points_ledger.entry_id")
    op.execute("UPDATE events SET payload = '{}' WHERE payload IS NULL")  # archived payloads stay archived
    op.execute("ALTER TABLE events ALTER COLUMN payload SET NOT NULL")
    op.execute("ALTER TABLE events ALTER COLUMN payload SET STATISTICS 0")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (event_id)")
    op.execute("ALTER TABLE exposures ADD CONSTRAINT pk_exposures PRIMARY KEY (event_id, campaign, rule_id)")
    op.execute("ALTER TABLE points_ledger ADD CONSTRAINT pk_points_ledger PRIMARY KEY (entry_id)")
    op.execute("CREATE INDEX ix_events_customer_id_order_id ON events (customer_id, order_id)")
    op.execute("CREATE INDEX ix_events_xid ON events (xid)")
    op.execute(
        "CREATE INDEX ix_exposures_campaign_customer_id_occurred_at ON exposures (campaign, customer_id, occurred_at)"
    )
    op.execute("CREATE INDEX ix_points_ledger_customer_id_entry_id ON points_ledger (customer_id, entry_id)")
    for name, reason in (("uq_points_ledger_spend_order", "spend"), ("uq_points_ledger_adjustment", "adjust")):
        op.execute(f"CREATE UNIQUE INDEX {name} ON points_ledger (customer_id, order_id) WHERE reason = '{reason}'")
    _add_foreign_keys()
    op.execute("DROP TABLE event_ids")
    op.execute("DROP FUNCTION delight_archive_event_payloads(date)")
    op.execute("DROP FUNCTION delight_month_partition(text, date)")
