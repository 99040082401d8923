"""One points spend per customer and order, so a retried till request spends once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "uq_points_ledger_spend_order",
        "points_ledger",
        ["customer_id", "order_id"],
        unique=True,
        postgresql_where=sa.text("reason = 'spend'"),
    )


def downgrade() -> None:
    op.drop_index("uq_points_ledger_spend_order", table_name="points_ledger")
