"""An audit log: who changed rules, keys, balances and customers, and when; one adjustment per id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("entry_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    # A manual adjustment is applied once per adjustment id, however often it is sent.
    op.create_index(
        "uq_points_ledger_adjustment",
        "points_ledger",
        ["customer_id", "order_id"],
        unique=True,
        postgresql_where=sa.text("reason = 'adjust'"),
    )


def downgrade() -> None:
    op.drop_index("uq_points_ledger_adjustment", table_name="points_ledger")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
