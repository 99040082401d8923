"""Surprise controls: sharded counters for budgets, pacing and stock; exposures; the customer's surprise log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A budget, a daily pacing limit or a gift's stock is a counter split over 16
# shards, each allowed an equal slice of the cap. An event draws from its home
# shard with one conditional UPDATE (no hot row: 16 events can hold 16 shards at
# once); only when the home shard is spent does it lock the counter's shards in
# order and take what is left anywhere. Caps come from the rule set in force,
# so a reloaded budget applies at once; usage is never lost.
SHARD_CAP = """
CREATE FUNCTION delight_shard_cap(total bigint, shard integer) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT total / 16 + CASE WHEN shard < total % 16 THEN 1 ELSE 0 END
$$
"""

TAKE = """
CREATE FUNCTION delight_take(p_key text, p_home integer, p_cap_n bigint, p_cap_cents bigint, p_cents bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    room_n bigint;
    room_cents bigint;
    remaining bigint := p_cents;
    piece bigint;
    row record;
BEGIN
    FOR attempt IN 1..2 LOOP
        -- An UPDATE that waited for the home row and then found it full keeps that row locked
        -- anyway; doing it in a sub-transaction that is undone on a miss releases the lock, so
        -- the slow path below really does take its locks in shard order (no deadlocks).
        BEGIN
            UPDATE counters SET n = n + 1, cents = cents + p_cents
            WHERE key = p_key AND shard = p_home
              AND (p_cap_n IS NULL OR n + 1 <= delight_shard_cap(p_cap_n, shard))
              AND (p_cap_cents IS NULL OR cents + p_cents <= delight_shard_cap(p_cap_cents, shard));
            IF FOUND THEN
                RETURN true;
            END IF;
            RAISE EXCEPTION 'home shard spent' USING ERRCODE = 'DL002';
        EXCEPTION WHEN SQLSTATE 'DL002' THEN
            NULL;
        END;
        EXIT WHEN attempt = 2;
        INSERT INTO counters (key, shard) SELECT p_key, g FROM generate_series(0, 15) AS g
        ON CONFLICT DO NOTHING;
    END LOOP;

    -- The home shard is spent: lock all shards of this counter (always in shard order) and look at the whole.
    PERFORM 1 FROM counters WHERE key = p_key ORDER BY shard FOR UPDATE;
    SELECT sum(CASE WHEN p_cap_n IS NULL THEN 1 ELSE delight_shard_cap(p_cap_n, shard) - n END),
           sum(CASE WHEN p_cap_cents IS NULL THEN p_cents ELSE delight_shard_cap(p_cap_cents, shard) - cents END)
    INTO room_n, room_cents
    FROM counters WHERE key = p_key;
    IF room_n < 1 OR room_cents < p_cents THEN
        RETURN false;
    END IF;
    UPDATE counters SET n = n + 1
    WHERE key = p_key AND shard = (
        SELECT shard FROM counters
        WHERE key = p_key AND (p_cap_n IS NULL OR n < delight_shard_cap(p_cap_n, shard))
        ORDER BY shard LIMIT 1
    );
    IF p_cap_cents IS NULL THEN
        UPDATE counters SET cents = cents + p_cents WHERE key = p_key AND shard = p_home;
        RETURN true;
    END IF;
    FOR row IN SELECT shard, cents FROM counters WHERE key = p_key ORDER BY shard LOOP
        EXIT WHEN remaining <= 0;
        piece := LEAST(remaining, delight_shard_cap(p_cap_cents, row.shard) - row.cents);
        IF piece > 0 THEN
            UPDATE counters SET cents = cents + piece WHERE key = p_key AND shard = row.shard;
            remaining := remaining - piece;
        END IF;
    END LOOP;
    RETURN true;
END
$$
"""

# Whether a counter still has room, without taking any: for held-out customers,
# who are recorded only where a treated customer would really have been awarded.
ROOM = """
CREATE FUNCTION delight_room(p_key text, p_cap_n bigint, p_cap_cents bigint, p_cents bigint)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT (p_cap_n IS NULL OR coalesce(sum(n), 0) + 1 <= p_cap_n)
       AND (p_cap_cents IS NULL OR coalesce(sum(cents), 0) + p_cents <= p_cap_cents)
    FROM counters WHERE key = p_key
$$
"""

# Walks the candidates of one event in priority order, applying the campaign
# and cross-campaign slots left for this customer and drawing every counter a
# candidate needs, all or none (a sub-transaction undoes a partial draw).
# Returns the positions of the accepted candidates. Mirrored for simulate and
# backtest by service.controls.plan.accept.
RESERVE = """
CREATE FUNCTION delight_reserve(p jsonb) RETURNS integer[] LANGUAGE plpgsql AS $$
DECLARE
    accepted integer[] := '{}';
    fatigue integer := (p->>'fatigue')::integer;
    slots jsonb := coalesce(p->'slots', '{}'::jsonb);
    candidate jsonb;
    position bigint;
    take jsonb;
    campaign text;
    ok boolean;
BEGIN
    FOR candidate, position IN
        SELECT value, ordinality - 1 FROM jsonb_array_elements(p->'candidates') WITH ORDINALITY
    LOOP
        campaign := candidate->>'campaign';
        CONTINUE WHEN fatigue IS NOT NULL AND fatigue <= 0;
        CONTINUE WHEN slots ? campaign AND (slots->>campaign)::integer <= 0;
        ok := true;
        IF candidate->>'group' = 'control' THEN
            FOR take IN SELECT value FROM jsonb_array_elements(candidate->'takes') LOOP
                IF NOT delight_room(take->>'key', (take->>'cap_n')::bigint, (take->>'cap_cents')::bigint,
                                    (take->>'cents')::bigint) THEN
                    ok := false;
                    EXIT;
                END IF;
            END LOOP;
        ELSIF jsonb_array_length(candidate->'takes') = 1 THEN
            take := candidate->'takes'->0;
            ok := delight_take(take->>'key', (take->>'home')::integer, (take->>'cap_n')::bigint,
                               (take->>'cap_cents')::bigint, (take->>'cents')::bigint);
        ELSIF jsonb_array_length(candidate->'takes') > 1 THEN
            BEGIN
                FOR take IN SELECT value FROM jsonb_array_elements(candidate->'takes') LOOP
                    IF NOT delight_take(take->>'key', (take->>'home')::integer, (take->>'cap_n')::bigint,
                                        (take->>'cap_cents')::bigint, (take->>'cents')::bigint) THEN
                        RAISE EXCEPTION 'counter spent' USING ERRCODE = 'DL001';
                    END IF;
                END LOOP;
            EXCEPTION WHEN SQLSTATE 'DL001' THEN
                ok := false;
            END;
        END IF;
        IF ok THEN
            accepted := accepted || position::integer;
            fatigue := fatigue - 1;
            IF slots ? campaign THEN
                slots := jsonb_set(slots, ARRAY[campaign], to_jsonb((slots->>campaign)::integer - 1));
            END IF;
        END IF;
    END LOOP;
    RETURN accepted;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("key", "shard", name=op.f("pk_counters")),
    )
    op.create_table(
        "exposures",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("group", sa.String(length=10), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("award_id", sa.UUID(), nullable=True),
        sa.Column("rule_set_version", sa.String(length=64), nullable=False),
        sa.CheckConstraint("\"group\" IN ('treatment', 'control')", name=op.f("ck_exposures_group")),
        sa.ForeignKeyConstraint(["event_id"], ["events.event_id"], name=op.f("fk_exposures_event_id_events")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_exposures_customer_id_customers"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(["award_id"], ["awards.award_id"], name=op.f("fk_exposures_award_id_awards")),
        sa.PrimaryKeyConstraint("event_id", "campaign", "rule_id", name=op.f("pk_exposures")),
    )
    op.create_index(
        "ix_exposures_campaign_customer_id_occurred_at", "exposures", ["campaign", "customer_id", "occurred_at"]
    )
    op.add_column(
        "customers",
        sa.Column("award_log", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
    )
    op.execute(SHARD_CAP)
    op.execute(TAKE)
    op.execute(ROOM)
    op.execute(RESERVE)


def downgrade() -> None:
    op.execute("DROP FUNCTION delight_reserve(jsonb)")
    op.execute("DROP FUNCTION delight_room(text, bigint, bigint, bigint)")
    op.execute("DROP FUNCTION delight_take(text, integer, bigint, bigint, bigint)")
    op.execute("DROP FUNCTION delight_shard_cap(bigint, integer)")
    op.drop_column("customers", "award_log")
    op.drop_index("ix_exposures_campaign_customer_id_occurred_at", table_name="exposures")
    op.drop_table("exposures")
    op.drop_table("counters")
