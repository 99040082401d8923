"""Drop ``ix_events_order_id``: no query looks events up by order alone.

A return finds its order through ``(customer_id, order_id)``, which
``ix_events_customer_id_order_id`` serves; nothing else reads
``events.order_id`` by itself. The index cost every event an index insert.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_events_order_id", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_order_id", "events", ["order_id"], unique=False)
