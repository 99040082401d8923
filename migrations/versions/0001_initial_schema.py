"""Initial schema: keys, customers, rule sets, events, awards and the points ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Profile counters live in jsonb objects (category -> spend, interaction -> count);
# these two helpers let one UPSERT add to them and read the top category.
JSONB_ADD = """
CREATE FUNCTION delight_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::numeric) AS total
        FROM (
            SELECT key, value FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT key, value FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) AS parts
        GROUP BY key
    ) AS sums
$$
"""

JSONB_TOP_KEY = """
CREATE FUNCTION delight_jsonb_top_key(a jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT key FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
    WHERE value::numeric > 0
    ORDER BY value::numeric DESC, key COLLATE "C"
    LIMIT 1
$$
"""


# Sender-supplied attributes: the newer event wins key by key, `consent` is
# merged per channel, and an older (late) event only fills what is missing.
MERGE_ATTRIBUTES = """
CREATE FUNCTION delight_merge_attributes(old jsonb, new jsonb, new_is_newer boolean) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN new_is_newer IS NOT FALSE
        THEN old || new || jsonb_strip_nulls(jsonb_build_object(
            'consent', CASE WHEN old ? 'consent' OR new ? 'consent'
                THEN coalesce(old->'consent', '{}'::jsonb) || coalesce(new->'consent', '{}'::jsonb) END))
        ELSE new || old || jsonb_strip_nulls(jsonb_build_object(
            'consent', CASE WHEN old ? 'consent' OR new ? 'consent'
                THEN coalesce(new->'consent', '{}'::jsonb) || coalesce(old->'consent', '{}'::jsonb) END))
    END
$$
"""


def upgrade() -> None:
    op.execute(JSONB_ADD)
    op.execute(JSONB_TOP_KEY)
    op.execute(MERGE_ATTRIBUTES)
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=50)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("purchase_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("return_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lifetime_spend", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("first_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("category_spend", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("interaction_counts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("points_balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("points_balance >= 0", name=op.f("ck_customers_points_balance_non_negative")),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customers")),
    )
    op.create_table(
        "rule_sets",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("files", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("first_loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_rule_sets")),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("channel", sa.String(length=50), nullable=True),
        sa.Column("store_id", sa.String(length=100), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("rule_set_version", sa.String(length=64), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_events_customer_id_customers"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_customer_id_occurred_at", "events", ["customer_id", "occurred_at"], unique=False)
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], unique=False)
    op.create_index("ix_events_order_id", "events", ["order_id"], unique=False)
    op.create_table(
        "awards",
        sa.Column("award_id", sa.UUID(), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("position", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("rule_set_version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("points", sa.Integer(), nullable=True),
        sa.Column("gift_id", sa.String(length=100), nullable=True),
        sa.Column("gift_name", sa.String(length=200), nullable=True),
        sa.Column("offer", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("cost", sa.Numeric(precision=12, scale=2), server_default="0", nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=10), server_default="issued", nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_order_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('gift', 'points', 'offer')", name=op.f("ck_awards_kind")),
        sa.CheckConstraint("status IN ('issued', 'redeemed', 'expired', 'reversed')", name=op.f("ck_awards_status")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_awards_customer_id_customers"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(["event_id"], ["events.event_id"], name=op.f("fk_awards_event_id_events")),
        sa.ForeignKeyConstraint(
            ["rule_set_version"], ["rule_sets.version"], name=op.f("fk_awards_rule_set_version_rule_sets")
        ),
        sa.PrimaryKeyConstraint("award_id", name=op.f("pk_awards")),
        sa.UniqueConstraint("code", name=op.f("uq_awards_code")),
        sa.UniqueConstraint("event_id", "campaign", "rule_id", name=op.f("uq_awards_event_id_campaign_rule_id")),
    )
    op.create_index("ix_awards_campaign_rule_id", "awards", ["campaign", "rule_id"], unique=False)
    op.create_index("ix_awards_customer_id_status", "awards", ["customer_id", "status"], unique=False)
    op.create_table(
        "points_ledger",
        sa.Column("entry_id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=10), nullable=False),
        sa.Column("award_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "reason IN ('earn', 'spend', 'expire', 'reverse', 'adjust')", name=op.f("ck_points_ledger_reason")
        ),
        sa.ForeignKeyConstraint(["award_id"], ["awards.award_id"], name=op.f("fk_points_ledger_award_id_awards")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_points_ledger_customer_id_customers"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(["event_id"], ["events.event_id"], name=op.f("fk_points_ledger_event_id_events")),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_points_ledger")),
    )
    op.create_index("ix_points_ledger_customer_id_entry_id", "points_ledger", ["customer_id", "entry_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_points_ledger_customer_id_entry_id", table_name="points_ledger")
    op.drop_table("points_ledger")
    op.drop_index("ix_awards_customer_id_status", table_name="awards")
    op.drop_index("ix_awards_campaign_rule_id", table_name="awards")
    op.drop_table("awards")
    op.drop_index("ix_events_order_id", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_index("ix_events_customer_id_occurred_at", table_name="events")
    op.drop_table("events")
    op.drop_table("rule_sets")
    op.drop_table("customers")
    op.drop_table("api_keys")
    op.execute("DROP FUNCTION delight_merge_attributes(jsonb, jsonb, boolean)")
    op.execute("DROP FUNCTION delight_jsonb_top_key(jsonb)")
    op.execute("DROP FUNCTION delight_jsonb_add(jsonb, jsonb)")
