"""Returns in the customers' timelines, so that the uplift report can net refunds off revenue on request.

``customer_timelines`` gains ``ret_at`` and ``ret_cum``: each customer's
returns as the purchases are kept, the instants in order and the running total
refunded in cents at each. The projection is marked unbuilt, so that the first
projector to run (or ``delight reports rebuild``) builds it again from the
stored events, returns included; until then reports say it is not built.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column, kind in (("ret_at", sa.DateTime(timezone=True)), ("ret_cum", sa.BigInteger())):
        op.add_column(
            "customer_timelines",
            sa.Column(column, postgresql.ARRAY(kind), server_default="{}", nullable=False),
        )
    # Read and written whole, never in a condition (see 0014).
    op.execute(
        "ALTER TABLE customer_timelines ALTER COLUMN ret_at SET STATISTICS 0, ALTER COLUMN ret_cum SET STATISTICS 0"
    )
    op.execute(
        "UPDATE projection_state SET snapshot = NULL, complete_at = NULL, target = NULL, target_at = NULL, "
        "cursor = NULL WHERE name = 'uplift'"
    )


def downgrade() -> None:
    op.drop_column("customer_timelines", "ret_cum")
    op.drop_column("customer_timelines", "ret_at")
