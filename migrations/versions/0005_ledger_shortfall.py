"""Record the points a return could not take back because they were already spent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("points_ledger", sa.Column("shortfall", sa.BigInteger(), server_default="0", nullable=False))
    op.create_index("ix_events_customer_id_order_id", "events", ["customer_id", "order_id"])


def downgrade() -> None:
    op.drop_index("ix_events_customer_id_order_id", table_name="events")
    op.drop_column("points_ledger", "shortfall")
