"""The purchase's timeline update finds its rows by index, whatever the table's size when it was planned.

``delight_purchase_joins_timelines`` runs in every purchase by an exposed
customer, from the event statement, and PL/pgSQL keeps the plan of its
``UPDATE`` for the rest of the session. Planned while ``first_exposures`` was
a few pages long (a new deployment), that plan was a sequential scan, and it
went on scanning the whole table on every purchase as the table grew, until
an ANALYZE made PostgreSQL plan it again. The event path's transaction rules
sequential scans out for its own statements (``service/lib/pg.py``); this
function also runs in an event that is one statement with no transaction
around it, so it carries the setting itself.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "delight_purchase_joins_timelines(text, timestamptz, numeric)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {FUNCTION} SET enable_seqscan = off")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {FUNCTION} RESET enable_seqscan")
