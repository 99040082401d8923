"""Record when each rule set was made active, so replicas agree on the one in force.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rule_sets", sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("rule_sets", sa.Column("activated_by", sa.String(length=200), nullable=True))
    op.create_index("ix_rule_sets_activated_at", "rule_sets", ["activated_at"])


def downgrade() -> None:
    op.drop_index("ix_rule_sets_activated_at", table_name="rule_sets")
    op.drop_column("rule_sets", "activated_by")
    op.drop_column("rule_sets", "activated_at")
